"""x86 integer kernels (VNNI, AVX-512BW and AVX2 fallbacks) are bit-exact against numpy.

Each case is one realized integer layer (uint8 × int8 → int32 + bias → requantize to uint8)
compiled through the full x86 pipeline, whose kernel must be the packed integer one.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from tvm import relax

from compiler.build import build, lower
from compiler.profile import kernel_table
from compiler.program import Program
from passes.quantize.realize import QOutput, QTensor, integer_layer
from passes.quantize.requantize import Requant, requantize_reference
from targets import get_target
from targets.integer import select_isa
from passes.quantize.schemes import QuantSpec
from targets.integer.depthwise_dot import depthwise_dot, pack_depthwise_dot_weight, quad_rows
from targets.integer.kernels import (ConvShape, conv2d, depthwise_conv2d, depthwise_dtype, pack_conv_weight,
                                     pack_depthwise_weight, pack_matmul_weight, width_fold)
from targets.integer.schedule import schedule_int8
from targets.x86.intrin import AVX2, AVX512, ISAS, VNNI
from quant_utils import (U8, conv_layer, host_can_run, layer_program, matmul_layer, matmul_layer_case, needs_host,
                         needs_int8_host, numpy_conv, on_host)

TARGET_NAMES = ["x86-vnni", "x86-avx512", "x86-avx2"]
TARGETS = on_host(*TARGET_NAMES)  # each skips where the host lacks its ISA (SIGILL otherwise)
ISA_PARAMS = [pytest.param(i.name, marks=needs_host(f"x86-{i.name}"), id=i.name) for i in ISAS]
S8 = QuantSpec(8, symmetric=True)
BY_NAME = {isa.name: isa for isa in ISAS}


def _run(program: Program, target: str, data: np.ndarray, runs: int = 4) -> np.ndarray:
    """Output of ``program`` compiled for ``target``; runs it several times to catch races."""
    spec = get_target(target)
    kernels = kernel_table(lower(program, spec))
    assert any(k["kernel"].startswith("int8") for k in kernels.values()), kernels
    vm = relax.VirtualMachine(build(program, spec), tvm.cpu())
    outs = [vm["main"](tvm.runtime.tensor(data)).numpy() for _ in range(runs)]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    return outs[0]


CONV_CASES = [  # (N, C, H, W, O, k, stride, pad, dilation, groups, input zero point)
    (1, 3, 9, 9, 5, 3, 1, 1, 1, 1, 113),     # C, O not multiples of 4 / 16; zero-point padding
    (2, 7, 8, 10, 6, 1, 1, 0, 1, 1, 0),      # batch 2, 1x1
    (1, 8, 11, 11, 16, 3, 2, 1, 1, 1, 0),    # stride 2, odd size
    (1, 4, 14, 14, 20, 5, 2, 2, 1, 1, 9),    # 5x5
    (1, 3, 16, 16, 24, 7, 2, 3, 1, 1, 0),    # 7x7 stem
    (1, 16, 10, 10, 16, 3, 1, 2, 2, 1, 0),   # dilation 2
    (1, 8, 10, 10, 4, 3, 1, 2, 2, 2, 0),     # grouped + dilated
    (1, 12, 7, 9, 36, 3, 1, 1, 1, 3, 5),     # grouped, 4 in / 12 out per group
    (1, 6, 12, 12, 6, 3, 1, 1, 1, 6, 0),     # depthwise
    (2, 40, 9, 9, 40, 5, 2, 2, 1, 40, 7),    # depthwise 5x5 stride 2, batch 2
    (2, 16, 6, 28, 16, 3, 1, 1, 1, 16, 5),  # depthwise 3x3 on row quads (VNNI), two output rows per quad
    (1, 32, 5, 30, 32, 5, 1, 2, 1, 32, 0),  # depthwise 5x5 on row quads, odd height: one row per quad
    (1, 64, 14, 14, 48, 1, 1, 0, 1, 1, 0),   # 48 = 3 vectors of 16
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "n{}c{}h{}w{}o{}k{}s{}p{}d{}g{}z{}".format(*c))
def test_conv_bit_exact(case, target):
    n, c, h, w, o, k, stride, pad, dil, groups, zero = case
    rng = np.random.default_rng(sum(case))
    x_codes = rng.integers(0, 256, (n, c, h, w)).astype(np.uint8)
    codes = rng.integers(-128, 128, (o, c // groups, k, k)).astype(np.int8)
    w_scale, bias = rng.uniform(0.001, 0.01, o), rng.standard_normal(o)
    out = QOutput(scale=0.05, zero=7, lo=7, hi=255, dtype="uint8")
    x = relax.Var("x", relax.TensorType((n, c, h, w), "uint8"))
    attrs = dict(strides=[stride] * 2, padding=[pad] * 4, dilation=[dil] * 2, groups=groups)
    call = relax.BlockBuilder().normalize(relax.op.nn.conv2d(
        relax.Var("f", relax.TensorType((n, c, h, w), "float32")), relax.const(np.zeros(codes.shape, np.float32)),
        **attrs))
    program = layer_program(x, lambda: integer_layer(call, QTensor(x, 0.02, zero, U8), codes, w_scale, bias, out,
                                                     False))
    got = _run(program, target, x_codes)
    acc = numpy_conv(x_codes, codes, stride, pad, dil, groups, pad_value=zero)
    per_out = np.float32(0.02) * w_scale.astype(np.float32)
    acc = acc - zero * codes.astype(np.int64).sum(axis=(1, 2, 3)).reshape(1, -1, 1, 1) \
        + np.round(bias / per_out).astype(np.int64).reshape(1, -1, 1, 1)
    want = requantize_reference(acc.astype(np.int32), Requant(per_out / np.float32(out.scale), out.zero, out.lo,
                                                              out.hi, "uint8"), axis=1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape,n_out", [((1, 17), 11), ((4, 64), 1000), ((2, 5, 36), 24), ((3, 130), 16)],
                         ids=["vec", "fc", "batched3d", "k130"])
def test_matmul_bit_exact(shape, n_out, target):
    x, body, x_codes, want = matmul_layer_case(shape, n_out, weight_low=-128, seed=len(shape) + n_out)
    got = _run(layer_program(x, body), target, x_codes)
    np.testing.assert_array_equal(got, want)


KERNEL_CASES = [  # (N, C, H, W, O, k, stride, pad, dilation, groups): convs reading NHWC or NCHW directly
    (1, 3, 30, 30, 64, 7, 2, 3, 1, 1),   # stem: folds kernel columns into the reduction
    (1, 1, 12, 12, 16, 3, 1, 1, 1, 1),   # one channel
    (2, 3, 17, 15, 20, 5, 2, 2, 2, 1),   # dilated: no fold
    (1, 10, 9, 11, 24, 3, 2, 0, 1, 2),   # grouped
]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: "n{}c{}h{}w{}o{}k{}s{}p{}d{}g{}".format(*c))
def test_conv_kernel_reads_either_layout(case, isa, layout):
    n, c, h, w, o, k, stride, pad, dil, groups = case
    shape = ConvShape(n, h, w, c, o, k, k, (stride,) * 2, (pad,) * 4, (dil,) * 2, groups)
    rng = np.random.default_rng(sum(case))
    x = rng.integers(0, 256, (n, c, h, w)).astype(np.uint8)
    weight = rng.integers(-128, 128, (o, c // groups, k, k)).astype(np.int8)
    func = schedule_int8(conv2d(shape, BY_NAME[isa], 9, layout), None).mod
    lib = tvm.compile(func, get_target(f"x86-{isa}").target)
    out = tvm.runtime.tensor(np.zeros((n, shape.out_height, shape.out_width, o), np.int32))
    lib(tvm.runtime.tensor(x if layout == "NCHW" else x.transpose(0, 2, 3, 1).copy()),
        tvm.runtime.tensor(pack_conv_weight(weight, shape, BY_NAME[isa], layout)), out)
    want = numpy_conv(x, weight, stride, pad, dil, groups, pad_value=9).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out.numpy(), want)


def test_stem_folds_columns_or_planes():
    stem = ConvShape(1, 224, 224, 3, 64, 7, 7, (2, 2), (3, 3, 3, 3))
    assert width_fold(stem, VNNI, "NHWC") == "columns" and width_fold(stem, VNNI, "NCHW") == "planes"
    assert width_fold(ConvShape(1, 56, 56, 64, 64, 3, 3), VNNI, "NHWC") == ""


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("channels,groups", [(5, 1), (16, 16)], ids=["conv", "depthwise"])
def test_signed_activations_are_shifted(target, channels, groups):
    """int8 activations (symmetric schemes) go through the uint8 kernels shifted by 128."""
    rng = np.random.default_rng(3)
    x_codes = rng.integers(-128, 128, (1, channels, 8, 8)).astype(np.int8)
    x_codes[0, 0, 0, :2] = (-128, 127)
    out_channels = 9 if groups == 1 else channels
    codes = rng.integers(-128, 128, (out_channels, channels // groups, 3, 3)).astype(np.int8)
    x = relax.Var("x", relax.TensorType(x_codes.shape, "int8"))
    program = layer_program(x, lambda: relax.op.nn.conv2d(x, relax.const(codes), padding=[1] * 4, groups=groups,
                                                          out_dtype="int32"))
    got = _run(program, target, x_codes)
    np.testing.assert_array_equal(got, numpy_conv(x_codes, codes, 1, 1, 1, groups, pad_value=0))


DEPTHWISE_DOT_CASES = [  # (N, C, H, W, k, stride, pad): rows per quad group 2, 1 (odd height), 1 (stride 2)
    (1, 16, 12, 12, 3, 1, 1),
    (2, 48, 7, 9, 3, 1, 1),
    (1, 32, 13, 11, 3, 2, 1),
    (1, 16, 10, 6, 5, 1, 2),
    (1, 16, 9, 9, 7, 1, 3),
    (1, 32, 6, 6, 1, 1, 0),
]


@needs_host("x86-vnni")
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", DEPTHWISE_DOT_CASES, ids=lambda c: "n{}c{}h{}w{}k{}s{}p{}".format(*c))
def test_depthwise_dot_kernel_bit_exact(case, layout):
    """The row-quad depthwise kernel alone (any stride, kernel size and quads per window)."""
    n, c, h, w, k, stride, pad = case
    shape = ConvShape(n, h, w, c, c, k, k, (stride,) * 2, (pad,) * 4, (1, 1), c)
    rng = np.random.default_rng(sum(case))
    x = rng.integers(0, 256, (n, c, h, w)).astype(np.uint8)
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = 255, 255
    weight = rng.integers(-128, 128, (c, 1, k, k)).astype(np.int8)
    weight[0, 0, 0, 0] = -128
    target = get_target("x86-vnni").target
    lib = tvm.compile(schedule_int8(depthwise_dot(shape, VNNI, 201, layout), target).mod, target)
    out = tvm.runtime.tensor(np.zeros((n, shape.out_height, shape.out_width, c), np.int32))
    lib(tvm.runtime.tensor(x if layout == "NCHW" else x.transpose(0, 2, 3, 1).copy()),
        tvm.runtime.tensor(pack_depthwise_dot_weight(weight, shape)), out)
    want = numpy_conv(x, weight, stride, pad, 1, c, pad_value=201).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out.numpy(), want)


def test_depthwise_dot_packs_rows_per_output_row():
    """Output row ``s`` of a quad group reads rows ``s .. s + KH - 1`` of the group's quads."""
    shape = ConvShape(1, 8, 8, 16, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 16)
    assert quad_rows(shape) == 2 and quad_rows(ConvShape(1, 7, 7, 16, 16, 3, 3, (1, 1), (1,) * 4, (1, 1), 16)) == 1
    weight = np.arange(16 * 9).reshape(16, 1, 3, 3).astype(np.int8)
    packed = pack_depthwise_dot_weight(weight, shape)  # [R, KW, J, C, 4]
    assert packed.shape == (2, 3, 1, 16, 4)
    np.testing.assert_array_equal(packed[0, 2, 0, 5], [weight[5, 0, 0, 2], weight[5, 0, 1, 2], weight[5, 0, 2, 2], 0])
    np.testing.assert_array_equal(packed[1, 0, 0, 5], [0, weight[5, 0, 0, 0], weight[5, 0, 1, 0], weight[5, 0, 2, 0]])


@needs_host("x86-vnni")
@pytest.mark.parametrize("stride,width,kind", [(1, 28, "int8 depthwise_dot"), (2, 56, "int8 depthwise"),
                                               (1, 14, "int8 depthwise")])
def test_depthwise_kernel_choice(stride, width, kind):
    """VNNI runs stride-1 depthwise layers at least 28 pixels wide on row quads, others on the float kernel."""
    program, _, _ = conv_layer((1, 16, 4, width, 16, 3, stride, 1, 1, 16), U8, 3, U8_OUT, fixed=False, seed=1)
    kernels = kernel_table(lower(program, get_target("x86-vnni")))
    assert kind in {k["kernel"] for k in kernels.values()}, kernels


@pytest.mark.parametrize("isa", [VNNI, AVX512, AVX2], ids=lambda i: i.name)
def test_packing_puts_one_instruction_operand_contiguous(isa):
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (20, 6, 3, 3)).astype(np.int8)
    packed = pack_conv_weight(w, ConvShape(1, 8, 8, 6, 20, 3, 3), isa)
    g, ob, ky, kx, ib, lane, k = 0, 1, 2, 0, 1, 3, 1
    assert packed[g, ob, ky, kx, ib, lane, k] == w[ob * isa.lanes + lane, ib * isa.group + k, ky, kx]
    assert packed.shape[-2:] == (isa.lanes, isa.group) and str(packed.dtype) == isa.weight_dtype
    m = rng.integers(-128, 128, (10, 21)).astype(np.int8)
    pm = pack_matmul_weight(m, isa)
    assert pm[1, 2, 4, 1] == m[2 * isa.group + 1, isa.lanes + 4]


def test_isa_selection():
    assert select_isa({"avx512vnni", "avx512bw", "avx2"}, ISAS) is VNNI
    assert select_isa({"avx512bw", "avx2"}, ISAS) is AVX512
    assert select_isa({"avx2"}, ISAS) is AVX2
    assert select_isa({"sse4.2"}, ISAS) is None


U8_OUT = QOutput(scale=2 ** -4, zero=7, lo=7, hi=255, dtype="uint8")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", [(1, 8, 9, 9, 20, 3, 1, 1, 1, 1), (1, 12, 7, 7, 12, 3, 2, 1, 1, 12)],
                         ids=["conv3x3", "depthwise_s2"])
def test_fixed_point_requantize_conv_bit_exact(case, target):
    """Integer-only requantization (int64 multiply + rounding shift) fused into the conv epilogue."""
    program, x_codes, want = conv_layer(case, U8, 113, U8_OUT, fixed=True, seed=sum(case))
    np.testing.assert_array_equal(_run(program, target, x_codes), want)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape,n_out", [((4, 64), 40), ((2, 3, 20), 16)], ids=["fc", "batched3d"])
def test_fixed_point_requantize_matmul_bit_exact(shape, n_out, target):
    """Integer-only requantization fused into the matmul epilogue."""
    program, x_codes, want = matmul_layer(shape, n_out, U8, 100, U8_OUT, fixed=True, seed=n_out)
    np.testing.assert_array_equal(_run(program, target, x_codes), want)


DEPTHWISE_23 = (1, 20, 12, 12, 20, 23, 1, 11, 1, 20)   # 529 taps: past the float32-exact bound


@pytest.mark.parametrize("target", TARGETS)
def test_depthwise_int32_branch_bit_exact(target):
    """A 23×23 depthwise layer accumulates in int32 (float32 would round sums past 2^24):
    activations near 255 and weights near -128 put the raw window sums beyond 2^24."""
    n, c, h, w, o, k, stride, pad, dil, groups = DEPTHWISE_23
    assert depthwise_dtype(ConvShape(n, h, w, c, o, k, k, (stride,) * 2, (pad,) * 4, (dil,) * 2, groups)) == "int32"
    out = QOutput(scale=0.02, zero=128, lo=0, hi=255, dtype="uint8")
    program, x_codes, want = conv_layer(DEPTHWISE_23, U8, 250, out, fixed=False, seed=23, x_range=(244, 255),
                                         w_range=(-128, -119))
    np.testing.assert_array_equal(_run(program, target, x_codes), want)
    assert len(np.unique(want)) > 30


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_depthwise_int32_kernel_exact_past_2_24(isa):
    """The depthwise kernel alone, 23×23, raw window sums up to 529·255·128 > 2^24: exact int32."""
    n, c, h, w, o, k, stride, pad, dil, groups = DEPTHWISE_23
    shape = ConvShape(n, h, w, c, o, k, k, (stride,) * 2, (pad,) * 4, (dil,) * 2, groups)
    rng = np.random.default_rng(5)
    x = rng.integers(253, 256, (n, c, h, w)).astype(np.uint8)
    weight = rng.integers(-128, -125, (c, 1, k, k)).astype(np.int8)
    func = schedule_int8(depthwise_conv2d(shape, BY_NAME[isa], 255, "NHWC"), None).mod
    lib = tvm.compile(func, get_target(f"x86-{isa}").target)
    out = tvm.runtime.tensor(np.zeros((n, shape.out_height, shape.out_width, c), np.int32))
    lib(tvm.runtime.tensor(x.transpose(0, 2, 3, 1).copy()), tvm.runtime.tensor(pack_depthwise_weight(weight, shape)),
        out)
    want = numpy_conv(x, weight, stride, pad, dil, groups, pad_value=255).transpose(0, 2, 3, 1)
    assert np.abs(want).max() > 2 ** 24 and (want % 2).any()
    np.testing.assert_array_equal(out.numpy(), want)


S8_OUT = QOutput(scale=0.08, zero=-3, lo=-128, hi=127, dtype="int8")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape,n_out", [((3, 70), 24), ((1, 16), 1000)], ids=["k70", "fc1000"])
def test_signed_activation_matmul_bit_exact(shape, n_out, target):
    """int8 activations (-128..127) into a matmul: the uint8 kernel's shift by 128 and its
    ``-128·Σw`` correction give the exact signed result (int8 output codes)."""
    program, x_codes, want = matmul_layer(shape, n_out, S8, 0, S8_OUT, fixed=False, seed=n_out)
    assert x_codes.min() == -128 and x_codes.max() == 127
    np.testing.assert_array_equal(_run(program, target, x_codes), want)


@pytest.mark.parametrize("target", TARGETS)
def test_signed_activation_matmul_raw_int32(target):
    """int8 × int8 → int32 matmul with no epilogue: exact against numpy."""
    rng = np.random.default_rng(8)
    x_codes = rng.integers(-128, 128, (5, 36)).astype(np.int8)
    x_codes[0, :2] = (-128, 127)
    codes = rng.integers(-128, 128, (36, 20)).astype(np.int8)
    x = relax.Var("x", relax.TensorType(x_codes.shape, "int8"))
    program = layer_program(x, lambda: relax.op.matmul(x, relax.const(codes), out_dtype="int32"))
    got = _run(program, target, x_codes)
    np.testing.assert_array_equal(got, x_codes.astype(np.int64) @ codes.astype(np.int64))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fixed", [False, True], ids=["float_rq", "fixed_point_rq"])
@pytest.mark.parametrize("kind", ["conv", "matmul"])
def test_per_channel_relu6_clip_bit_exact(kind, fixed, target):
    """An equalized ReLU6: lower clip at the zero point, upper clip per output channel."""
    channels = 20
    rng = np.random.default_rng(6)
    hi = rng.integers(60, 256, channels)
    hi[:3] = (255, 60, 61)
    out = QOutput(scale=2 ** -5, zero=40, lo=40, hi=hi, dtype="uint8")
    if kind == "conv":
        program, x_codes, want = conv_layer((1, 8, 8, 8, channels, 3, 1, 1, 1, 1), U8, 9, out, fixed, seed=6)
        clipped = (want == hi.reshape(1, -1, 1, 1)) & (hi.reshape(1, -1, 1, 1) < 255)
    else:
        program, x_codes, want = matmul_layer((4, 48), channels, U8, 9, out, fixed, seed=6)
        clipped = (want == hi) & (hi < 255)
    assert clipped.any() and (want > hi.min()).any()   # the per-channel bound matters
    np.testing.assert_array_equal(_run(program, target, x_codes), want)


@pytest.fixture(scope="module")
def resnet8_int8():
    from compiler import zoo
    from compiler.config import QuantConfig
    from compiler.frontend import import_onnx
    from compiler.pipeline import Recipe, run_passes

    data = zoo.bundled_slice()
    program = import_onnx(zoo.model_path("fmnist-resnet8"), {"input": (4, 1, 28, 28)})
    config = QuantConfig(calibration={"input": data["calib"][:64]})
    return run_passes(program, Recipe.cleanups() + config.recipe(progress=False)), data["calib"][64:68]


def test_whole_model_same_outputs_on_every_path(resnet8_int8):
    """Quantized ResNet-8 (batch 4): VNNI, both fallbacks and TVM's generic integer lowering agree exactly."""
    import dataclasses

    from targets.schedules import default_schedule

    runnable = [t for t in TARGET_NAMES if host_can_run(t)]
    if not runnable:
        pytest.skip("host runs none of " + ", ".join(TARGET_NAMES))
    program, images = resnet8_int8
    generic = dataclasses.replace(get_target("x86"), legalize=None, schedule=default_schedule)
    outputs = {}
    for spec in [generic, *(get_target(t) for t in runnable)]:
        vm = relax.VirtualMachine(build(program, spec), tvm.cpu())
        outputs[spec.name if spec is not generic else "generic"] = vm["main"](tvm.runtime.tensor(images)).numpy()
    for name, out in outputs.items():
        np.testing.assert_array_equal(out, outputs["generic"], err_msg=name)


@needs_host("x86-vnni")
def test_wrong_tuned_kernel_is_rejected(tmp_path):
    """A database record whose kernel computes something else is not used (compiler.verify)."""
    from compiler.verify import CACHE, check_tuned

    shape = ConvShape(1, 6, 6, 8, 16, 3, 3, padding=(1, 1, 1, 1))
    right, wrong = conv2d(shape, VNNI, 0), conv2d(shape, VNNI, 5)  # the wrong one pads with 5
    untuned = tvm.IRModule({"kernel": right})
    gvar = untuned.get_global_var("kernel")
    for func, kept in ((schedule_int8(right, None).mod["main"], True), (schedule_int8(wrong, None).mod["main"], False)):
        tuned = tvm.IRModule({gvar: func})
        out = check_tuned(untuned, tuned, get_target("x86").target, None, tmp_path)
        assert out[gvar].same_as(func if kept else right)
    assert sorted(json.loads((tmp_path / CACHE).read_text()).values()) == [False, True]


@needs_int8_host()
def test_inspect_profiles_each_kernel(tmp_path):
    """``squeeze inspect art.tar --profile``: per kernel, the schedule used, its time and GOP/s."""
    from conftest import squeeze

    import compiler
    from compiler import zoo

    art = tmp_path / "r8.tar"
    calib = {"input": zoo.bundled_slice()["calib"][:32]}
    quantize = compiler.QuantConfig(calibration=calib)
    compiler.compile(zoo.model_path("fmnist-resnet8"), "x86", quantize=quantize).save(art)
    out = squeeze("inspect", art, "--profile")
    assert out.returncode == 0, out.stderr
    rows = [line.split("int8 conv2d") for line in out.stdout.splitlines() if line.startswith("fused_int8_conv2d")]
    assert len(rows) == 9 and all(len(r) == 2 and "/Conv" in r[0] for r in rows), out.stdout  # tied to layers
    assert all(float(r[1].split()[0]) > 0 and float(r[1].split()[1]) > 0 for r in rows), out.stdout  # us, GOP/s
    assert "GOP/s overall" in out.stdout


@pytest.mark.slow
@needs_int8_host()
def test_tuning_keeps_outputs_and_reuses_records(resnet8_int8, tmp_path, capsys):
    """MetaSchedule over the integer kernels' space: same outputs as untuned; a second
    tuning run finds the integer tasks searched and measures none of them again."""
    from compiler.tune import tune

    def int8_rounds() -> list[str]:
        return [line for line in capsys.readouterr().out.splitlines() if "trials] fused_int8_" in line]

    program, images = resnet8_int8
    spec = get_target("x86")
    tune(program, spec, tmp_path, trials=64)
    assert int8_rounds()
    tune(program, spec, tmp_path, trials=64)
    assert int8_rounds() == []
    outputs = [relax.VirtualMachine(build(program, spec, db), tvm.cpu())["main"](tvm.runtime.tensor(images)).numpy()
               for db in (None, tmp_path)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
