"""Integer conv2d/matmul layers are bit-exact against a numpy integer reference."""
import numpy as np
import pytest
import tvm
from tvm import relax

from passes.quantize.realize import QOutput, QTensor, integer_layer
from passes.quantize.requantize import Requant, requantize_reference
from quant_utils import U8, matmul_layer_case, numpy_conv


def _compile(fn_args, build_body):
    bb = relax.BlockBuilder()
    with bb.function("main", fn_args):
        with bb.dataflow():
            out = bb.emit_output(build_body())
        bb.emit_func_output(out)
    vm = relax.VirtualMachine(tvm.compile(bb.get(), tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return vm["main"]


CONV_CASES = [  # (N, C, H, W, O, k, stride, pad, dilation, groups)
    (1, 3, 9, 9, 5, 3, 1, 1, 1, 1),
    (2, 7, 8, 10, 6, 1, 1, 0, 1, 1),
    (1, 8, 11, 11, 16, 3, 2, 1, 1, 1),
    (1, 6, 12, 12, 6, 3, 1, 1, 1, 6),     # depthwise
    (1, 8, 10, 10, 4, 3, 1, 2, 2, 2),     # grouped, dilated
    (1, 4, 14, 14, 8, 5, 2, 2, 1, 1),
    (1, 3, 16, 16, 4, 7, 2, 3, 1, 1),
]


@pytest.mark.parametrize("integer_only", [False, True], ids=["float_rq", "fixed_point_rq"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "n{}c{}h{}w{}o{}k{}s{}p{}d{}g{}".format(*c))
def test_conv_layer_bit_exact(case, integer_only):
    n, c, h, w, o, k, stride, pad, dil, groups = case
    rng = np.random.default_rng(sum(case))
    x_codes = rng.integers(0, 256, (n, c, h, w)).astype(np.uint8)
    codes = rng.integers(-127, 128, (o, c // groups, k, k)).astype(np.int8)
    w_scale = rng.uniform(0.001, 0.01, o)
    bias = rng.standard_normal(o)
    xq_scale, xq_zero = 0.02, 113
    out = QOutput(scale=0.05, zero=7, lo=7, hi=255, dtype="uint8")   # fused relu: lo = zero point
    x = relax.Var("x", relax.TensorType((n, c, h, w), "uint8"))
    attrs = dict(strides=[stride, stride], padding=[pad] * 4, dilation=[dil, dil], groups=groups)
    call = relax.op.nn.conv2d(relax.Var("f", relax.TensorType((n, c, h, w), "float32")),
                              relax.const(np.zeros(codes.shape, np.float32)), **attrs)
    call = relax.BlockBuilder().normalize(call)

    def body():
        return integer_layer(call, QTensor(x, xq_scale, xq_zero, U8), codes, w_scale, bias, out, integer_only)

    got = _compile([x], body)(tvm.runtime.tensor(x_codes)).numpy()
    acc = numpy_conv(x_codes, codes, stride, pad, dil, groups, pad_value=xq_zero)
    per_out = np.float32(xq_scale) * w_scale.astype(np.float32)
    acc = acc - xq_zero * codes.astype(np.int64).sum(axis=(1, 2, 3)).reshape(1, -1, 1, 1) \
        + np.round(bias / per_out).astype(np.int64).reshape(1, -1, 1, 1)
    rq = Requant(per_out / np.float32(out.scale), out.zero, out.lo, out.hi, "uint8", integer_only)
    want = requantize_reference(acc.astype(np.int32), rq, axis=1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(1, 17), (4, 33), (2, 5, 64)], ids=["vec", "batch", "batched3d"])
def test_matmul_layer_bit_exact(shape):
    x, body, x_codes, want = matmul_layer_case(shape, 11, weight_low=-127, seed=len(shape))
    got = _compile([x], body)(tvm.runtime.tensor(x_codes)).numpy()
    np.testing.assert_array_equal(got, want)
