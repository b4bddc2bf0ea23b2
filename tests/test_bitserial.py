"""Bit-serial conv2d / matmul kernels: bit-exact against numpy integer references.

Each layer is built like the quantizer builds one (int32 accumulator, bias, requantization),
with activation codes of 1-3 bits (the IR shows their range with a clip, as a producer's
requantization does) and binary, ternary or 2-bit weights; the expected codes come from
``quant_utils`` (numpy convolutions and requantization, not the code under test). They run on
this host and, cross-compiled, under ``qemu-aarch64`` (NEON ``cnt``).
"""
import dataclasses

import numpy as np
import pytest
import tvm
from arm_emu import disassembly, library, missing_tools, run_lowered
from tvm import relax

from compiler.build import build, lower
from compiler.profile import kernel_table
from passes.quantize.realize import QOutput
from passes.quantize.schemes import QuantSpec
from quant_utils import conv_layer, matmul_layer
from targets import get_target, integer
from targets.x86 import BITSERIAL

U8, S8 = QuantSpec(8, symmetric=False), QuantSpec(8, symmetric=True)
OUT = QOutput(scale=0.05, zero=-2, lo=-128, hi=127, dtype="int8")
BINARY, TERNARY, TWO_BIT = (-1, 1), (-1, 0, 1), (-2, -1, 0, 1)
EVERYWHERE = dataclasses.replace(BITSERIAL, rules=(integer.BitSerialRule(("conv2d", "grouped_conv2d", "matmul"), 9),))
EVERYWHERE_ARM = dataclasses.replace(EVERYWHERE, word=16)  # NEON cnt + uadalp: 16-bit lanes

CONV_CASES = [  # (N, C, H, W, O, k, stride, pad, dilation, groups), input spec, zero point, codes, weights
    pytest.param((1, 64, 8, 8, 24, 3, 1, 1, 1, 1), U8, 0, (0, 1), BINARY, id="binary-3x3"),
    pytest.param((1, 40, 9, 7, 20, 3, 2, 1, 1, 1), U8, 1, (0, 3), TERNARY, id="a2-ternary-stride2-zero1"),
    pytest.param((2, 96, 6, 6, 16, 1, 1, 0, 1, 1), U8, 0, (0, 1), TWO_BIT, id="a1-w2-1x1-batch2"),
    pytest.param((1, 64, 10, 10, 32, 3, 1, 2, 2, 2), U8, 2, (0, 3), BINARY, id="a2-binary-grouped-dilated"),
    pytest.param((1, 24, 7, 7, 12, 3, 1, 1, 1, 1), S8, 0, (-4, 3), TERNARY, id="signed-a3-ternary"),
]
MATMUL_CASES = [
    pytest.param((3, 100), 40, (0, 1), BINARY, id="binary-3x100"),
    pytest.param((2, 5, 64), 24, (0, 3), TERNARY, id="a2-ternary-batched"),
]


def _spec(base: str, support=None):
    """Target ``base`` with bit-serial kernels declared as ``support`` (default: for every layer
    they can take, up to 3 x 3 plane pairs), whatever this host's popcount instruction."""
    spec = get_target(base)
    isa = integer.select_isa(spec.features, _isas(base))
    support = support or (EVERYWHERE if base == "x86" else EVERYWHERE_ARM)
    return dataclasses.replace(spec, legalize=integer.legalize(isa, spec.integer_ops, bitserial=support),
                               bitserial=support)


def _isas(base: str):
    if base == "x86":
        from targets.x86.intrin import ISAS
    else:
        from targets.arm.intrin import ISAS
    return ISAS


def _bitserial_kernels(mod: tvm.IRModule) -> list[str]:
    return [k["kernel"] for k in kernel_table(mod).values() if k["kernel"].startswith("bitserial")]


def _run_host(program, spec) -> np.ndarray:
    vm = relax.VirtualMachine(build(program, spec), tvm.cpu())
    (x,) = program.inputs
    return lambda codes: vm["main"](tvm.runtime.tensor(codes)).numpy()


def _conv(case, spec_in, zero, codes, weights):
    return conv_layer(case, spec_in, zero, OUT, fixed=False, seed=sum(case), x_range=codes, w_values=weights,
                      clip_input=True)


@pytest.mark.parametrize("case,x_spec,zero,codes,weights", CONV_CASES)
def test_conv_bit_exact_on_host(case, x_spec, zero, codes, weights):
    program, x_codes, want = _conv(case, x_spec, zero, codes, weights)
    spec = _spec("x86")
    kinds = _bitserial_kernels(lower(program, spec))
    assert kinds and all("conv2d" in k for k in kinds), kernel_table(lower(program, spec))
    np.testing.assert_array_equal(_run_host(program, spec)(x_codes), want)


@pytest.mark.parametrize("shape,n_out,codes,weights", MATMUL_CASES)
def test_matmul_bit_exact_on_host(shape, n_out, codes, weights):
    program, x_codes, want = matmul_layer(shape, n_out, U8, 0, OUT, fixed=False, seed=n_out, x_range=codes,
                                          w_values=weights, clip_input=True)
    spec = _spec("x86")
    assert _bitserial_kernels(lower(program, spec))
    np.testing.assert_array_equal(_run_host(program, spec)(x_codes), want)


def test_eight_bit_layers_stay_on_the_int8_kernels():
    """Without a clip the codes may take all 8 bits: with x86's declaration the int8 kernel
    runs, whatever the weights."""
    program, _, _ = conv_layer((1, 64, 6, 6, 16, 3, 1, 1, 1, 1), U8, 0, OUT, fixed=False, seed=3, w_values=BINARY)
    kinds = [k["kernel"] for k in kernel_table(lower(program, _spec("x86", BITSERIAL))).values()]
    assert "int8 conv2d" in kinds and not any(k.startswith("bitserial") for k in kinds), kinds


def test_target_declaration_decides():
    """The same 2-bit layer goes bit-serial or int8 as the declared plane-pair limit says."""
    program, _, _ = _conv(*CONV_CASES[1].values)  # 2-bit codes x 2 weight planes = 4 pairs
    narrow = dataclasses.replace(EVERYWHERE, rules=(integer.BitSerialRule(("conv2d",), 3),))
    assert not _bitserial_kernels(lower(program, _spec("x86", narrow)))
    assert _bitserial_kernels(lower(program, _spec("x86")))


needs_emulator = pytest.mark.skipif(bool(missing_tools()), reason=missing_tools() or "")


@needs_emulator
@pytest.mark.parametrize("case,x_spec,zero,codes,weights", [CONV_CASES[0], CONV_CASES[3]])
def test_conv_bit_exact_under_qemu(case, x_spec, zero, codes, weights, tmp_path):
    program, x_codes, want = _conv(case, x_spec, zero, codes, weights)
    spec = _spec("rpi5")
    mod = lower(program, spec)
    assert _bitserial_kernels(mod)
    (got,) = run_lowered(mod, spec, [x_codes], tmp_path, "cortex-a76")
    np.testing.assert_array_equal(got, want)
    asm = disassembly(library(mod, spec, tmp_path / "k.so"))
    assert "\tcnt\t" in asm, "no NEON cnt in the bit-serial kernel"


@needs_emulator
def test_matmul_bit_exact_under_qemu(tmp_path):
    shape, n_out, codes, weights = MATMUL_CASES[1].values
    program, x_codes, want = matmul_layer(shape, n_out, U8, 0, OUT, fixed=False, seed=n_out, x_range=codes,
                                          w_values=weights, clip_input=True)
    spec = _spec("rpi5")
    (got,) = run_lowered(lower(program, spec), spec, [x_codes], tmp_path, "cortex-a76")
    np.testing.assert_array_equal(got, want)


needs_vpopcntdq = pytest.mark.skipif("avx512vpopcntdq" not in get_target("x86").features,
                                     reason="host lacks avx512vpopcntdq (x86 declares bit-serial kernels with it)")


def _binary_qonnx(path):
    """A QONNX CNN as Brevitas exports it: 8-bit input, int8 conv, a 1-bit activation, a binary
    (bipolar-weight) conv on 64 channels, a 2-bit activation, a ternary conv, 8-bit output; no
    scale makes exact rounding ties (where ONNX Runtime rounds halves its own way)."""
    import onnx
    from onnx import TensorProto, helper
    from test_qonnx import DOMAIN, _init, _quant

    rng = np.random.default_rng(5)
    inits = [_init("w1", rng.standard_normal((64, 3, 3, 3)) * 0.3), _init("w2", rng.standard_normal((64, 64, 3, 3))),
             _init("w3", rng.standard_normal((32, 64, 1, 1))), _init("w2s", 0.015)]
    node = helper.make_node
    nodes = [_quant("input", "xq", 1 / 32, 0, 8, inits, signed=1),
             _quant("w1", "w1q", 0.02, 0, 8, inits, signed=1, narrow=1),
             node("Conv", ["xq", "w1q"], ["c1"], name="conv1", pads=[1] * 4),
             _quant("c1", "a1", 0.613, 0, 1, inits, signed=0),
             node("BipolarQuant", ["w2", "w2s"], ["w2q"], name="w2q", domain=DOMAIN),
             node("Conv", ["a1", "w2q"], ["c2"], name="conv2", pads=[1] * 4),
             _quant("c2", "a2", 0.1037, 0, 2, inits, signed=0),
             _quant("w3", "w3q", 0.5, 0, 2, inits, signed=1, narrow=1),
             node("Conv", ["a2", "w3q"], ["c3"], name="conv3"),
             _quant("c3", "output", 0.043, 0, 8, inits, signed=1)]
    graph = helper.make_graph(nodes, "binary", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 32, 12, 12])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1)]),
              path)
    return path


@needs_vpopcntdq
def test_qonnx_binary_cnn_runs_bit_serial_end_to_end(tmp_path):
    """From the API: the binary layer of a QONNX model runs bit-serial, the others int8, as the
    target declares, and the model gives ONNX Runtime's integers (its fused QLinearConv on the
    Q/DQ form) exactly; from the CLI, ``inspect`` names the kernels and the packed weight bytes."""
    import onnx
    import onnxruntime as ort
    from conftest import squeeze

    import compiler
    from compiler.qonnx import lower_quantizers

    path = _binary_qonnx(tmp_path / "binary.onnx")
    art = compiler.compile(path, target="x86")
    kernels = sorted(v["kernel"] for v in art.manifest.summary["kernels"].values() if v["kernel"] != "schedule_elementwise")
    # the binary 3x3 conv is bit-serial; x86 declares the 2 x 2-bit 1x1 conv (4 words) for int8
    assert kernels.count("bitserial a1wb conv2d") == 1 and kernels.count("int8 conv2d") == 2, kernels
    art.save(tmp_path / "binary.tar")
    model = compiler.load(tmp_path / "binary.tar")
    sess = ort.InferenceSession(lower_quantizers(onnx.load(path)).SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
        np.testing.assert_array_equal(model.run({"input": x})["output"], sess.run(None, {"input": x})[0])
    shown = squeeze("inspect", tmp_path / "binary.tar")
    assert shown.returncode == 0, shown.stderr
    conv2 = next(line for line in shown.stdout.splitlines() if line.startswith("conv2 "))
    assert "bitserial a1wb conv2d" in conv2 and f"{64 * 64 * 9 // 8 + 64 * 4:,}" in conv2, shown.stdout


def test_low_bit_layers_left_to_int8_are_logged(tmp_path):
    """A target whose declaration takes none of the low-bit layers runs them on its int8
    kernels and says so in one line (conv1's 8-bit weights use 7 bits of codes: it counts)."""
    import compiler

    lines = []
    spec = _spec("x86", dataclasses.replace(EVERYWHERE, rules=(integer.BitSerialRule(("conv2d",), 9, 1024),)))
    compiler.compile(_binary_qonnx(tmp_path / "binary.onnx"), target=spec, log=lines.append)
    notes = [line for line in lines if line.startswith("note:")]
    assert notes == [f"note: 3 of 3 layers below 8 bits run on {spec.name}'s int8 kernels (its bit-serial kernels "
                     "take conv2d of <= 9 plane pairs, >= 1024 words per output)"], lines
