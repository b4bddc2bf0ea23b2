"""Bilinear Resize on int8 codes (``passes.quantize.resize``): the fixed-point taps against ONNX
Runtime's float Resize, the int32 accumulation bit-exact against a direct numpy formula, and a
model whose upsampling stays in integers."""
import numpy as np
import pytest
import tvm
from graphs import GraphBuilder, run_ort
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from compiler.ir import op_name
from passes.quantize import resize

MODES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
SIZES = [(4, 8), (5, 10), (6, 4), (3, 7), (7, 1)]   # (in, out) along each axis


def _resize_model(shape, out_hw, mode):
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                          coordinate_transformation_mode=mode)],
        "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*shape[:2], *out_hw])],
        [numpy_helper.from_array(np.array([*shape[:2], *out_hw], np.int64), "sizes")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("mode", MODES)
def test_taps_interpolate_as_onnx_runtime(mode):
    rng = np.random.default_rng(0)
    for (ih, oh), (iw, ow) in zip(SIZES, SIZES[::-1]):
        x = rng.standard_normal((1, 1, ih, iw)).astype(np.float32)
        want = run_ort(_resize_model(x.shape, (oh, ow), mode), {"x": x})[0][0, 0]
        y0, y1, wy0, wy1 = resize.taps(oh, ih, mode)
        x0, x1, wx0, wx1 = resize.taps(ow, iw, mode)
        rows = x[0, 0][y0] * wy0[:, None] + x[0, 0][y1] * wy1[:, None]
        got = (rows[:, x0] * wx0 + rows[:, x1] * wx1) / 2.0 ** (2 * resize.FRACTION_BITS)
        # each tap weight is rounded to 1/256
        assert np.abs(got - want).max() <= 2 / 256 * np.abs(x).max(), (mode, ih, iw, oh, ow)


def _direct(codes: np.ndarray, zero: int, out_hw, mode: str) -> np.ndarray:
    """Σ wy·wx·(q - z) written out per output pixel from the ONNX coordinate formula."""
    n, c, ih, iw = codes.shape
    one = 1 << resize.FRACTION_BITS

    def coordinate(o, out, inp):
        if mode == "align_corners":
            x = o * (inp - 1) / (out - 1) if out > 1 else 0.0
        elif mode == "asymmetric":
            x = o * inp / out
        elif mode == "pytorch_half_pixel" and out == 1:
            x = 0.0
        else:
            x = (o + 0.5) * inp / out - 0.5
        x = min(max(x, 0.0), inp - 1)
        lo = int(np.floor(x))
        w = int(np.round((x - lo) * one))
        return lo, min(lo + 1, inp - 1), one - w, w

    out = np.zeros((n, c, *out_hw), np.int64)
    centred = codes.astype(np.int64) - zero
    for oy in range(out_hw[0]):
        a0, a1, p0, p1 = coordinate(oy, out_hw[0], ih)
        for ox in range(out_hw[1]):
            b0, b1, q0, q1 = coordinate(ox, out_hw[1], iw)
            out[:, :, oy, ox] = (p0 * q0 * centred[:, :, a0, b0] + p0 * q1 * centred[:, :, a0, b1]
                                 + p1 * q0 * centred[:, :, a1, b0] + p1 * q1 * centred[:, :, a1, b1])
    return out


@pytest.mark.parametrize("mode", MODES)
def test_int32_accumulation_is_bit_exact(mode):
    rng = np.random.default_rng(1)
    shape, out_hw, zero = (1, 3, 5, 6), (10, 4), 7
    codes = rng.integers(-128, 128, shape).astype(np.int8)
    x = relax.Var("x", relax.TensorType(shape, "int8"))
    call = relax.op.image.resize2d(relax.Var("f", relax.TensorType(shape, "float32")), out_hw, method="linear",
                                   coordinate_transformation_mode=mode)
    call = relax.BlockBuilder().normalize(call)
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        centred = relax.op.subtract(relax.op.astype(x, "int32"), relax.const(np.int32(zero)))
        bb.emit_func_output(bb.normalize(resize.bilinear_accumulate(centred, call)))
    ex = tvm.compile(bb.get(), "llvm")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(codes)).numpy()
    np.testing.assert_array_equal(got, _direct(codes, zero, out_hw, mode))


def _fpn():
    """Two feature maps merged after a bilinear 2x upsampling, as in an FPN / OCR detector."""
    g = GraphBuilder(seed=5)
    deep = g.op("Relu", [g.conv(g.op("Relu", [g.conv("input", 4, 8, stride=2)]), 8, 8)])
    scales = g.weight((4,))
    g.inits[-1] = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), scales)
    up = g.op("Resize", [deep, "", scales], mode="linear", coordinate_transformation_mode="half_pixel")
    merged = g.op("Add", [up, g.op("Relu", [g.conv("input", 4, 8)])])
    return g.model({"input": (1, 4, 12, 12)}, g.conv(merged, 8, 4, k=1), (1, 4, 12, 12))


def test_fpn_upsampling_runs_in_integers():
    from test_realize_graphs import _check

    quant = _check(_fpn(), (1, 4, 12, 12), 4, islands={})
    ops = {op_name(b.value) for blk in quant.mod["main"].body.blocks for b in blk.bindings}
    assert "relax.image.resize2d" not in ops and "relax.take" in ops
