"""AArch64 integer kernels (``sdot``, ``udot``, ``smmla``, ``ummla``, NEON ``smull``/``sadalp``),
cross-compiled and run under ``qemu-aarch64``, are bit-exact against the numpy integer references
of :mod:`quant_utils`.

Each case is one realized integer layer (int8 × int8, or uint8 activations of a nonzero zero
point × int8 → int32 + bias → requantize, clip) lowered through the full pipeline for a board
preset; its fused, scheduled PrimFuncs run under emulation through ``tests/arm_host.c``
(:mod:`arm_emu`); a few conv kernels also run alone on NHWC or NCHW input. The dotprod and i8mm
paths run on ``-cpu max``; the NEON path on ``-cpu cortex-a72`` (the Raspberry Pi 4's core: no
dotprod). uint8 activations run on ``udot`` (rpi5) and ``ummla`` (graviton3) with weights packed
as ``w + 128`` and the window sum of the activations subtracted.
"""
from __future__ import annotations

import json
import subprocess
import tarfile

import numpy as np
import pytest
from tvm import relax

from arm_emu import SYSROOT, disassembly, host_binary, library, missing_tools, run_lowered
from compiler.build import lower
from compiler.errors import SqueezeError
from compiler.profile import kernel_table
from passes.quantize.realize import QOutput
from passes.quantize.schemes import QuantSpec
from quant_utils import U8, conv_layer, matmul_layer, numpy_conv
from targets import get_target
from targets.arm import BOARDS
from targets.arm.intrin import NEON, SDOT, SMMLA, UDOT, UMMLA
from targets.integer.kernels import ConvShape, conv2d, pack_conv_weight
from targets.integer.schedule import schedule_int8

needs_emulator = pytest.mark.skipif(bool(missing_tools()), reason=missing_tools() or "")
S8 = QuantSpec(8, symmetric=True)
S8_OUT = QOutput(scale=0.08, zero=-3, lo=-128, hi=127, dtype="int8")
U8_OUT = QOutput(scale=2 ** -4, zero=7, lo=7, hi=255, dtype="uint8")
U8_ZERO = 113  # zero point of the uint8 activations (the spatial padding value)
# activation dtype -> (spec, zero point, output), as int8_sym and int8 quantize
ACTIVATIONS = {"int8": (S8, 0, S8_OUT), "uint8": (U8, U8_ZERO, U8_OUT)}
# (board, qemu -cpu): each board on a core that has exactly what it needs
BOARD_CPUS = [pytest.param("rpi5", "max", id="rpi5"), pytest.param("rpi4", "cortex-a72", id="rpi4"),
              pytest.param("graviton3", "max", id="graviton3")]
# (board, qemu -cpu, activation dtype, the ISA its layers must run on): each ARM integer path
PATHS = [pytest.param("rpi5", "max", "int8", SDOT, id="sdot"), pytest.param("rpi5", "max", "uint8", UDOT, id="udot"),
         pytest.param("rpi4", "cortex-a72", "int8", NEON, id="neon"),
         pytest.param("graviton3", "max", "int8", SMMLA, id="smmla"),
         pytest.param("graviton3", "max", "uint8", UMMLA, id="ummla")]

CONV_CASES = [  # (N, C, H, W, O, k, stride, pad, dilation, groups)
    (1, 3, 9, 9, 5, 3, 1, 1, 1, 1),       # C, O not multiples of 4; stem-like fold
    (2, 7, 8, 10, 6, 1, 1, 0, 1, 1),      # batch 2, 1x1
    (1, 8, 11, 11, 16, 3, 2, 1, 1, 1),    # stride 2, odd size
    (1, 4, 14, 14, 20, 5, 2, 2, 1, 1),    # 5x5
    (1, 3, 16, 16, 24, 7, 2, 3, 1, 1),    # 7x7 stem
    (1, 16, 10, 10, 16, 3, 2, 2, 2, 1),   # stride 2 + dilation 2
    (1, 8, 10, 10, 4, 3, 1, 2, 2, 2),     # grouped + dilated
    (1, 12, 7, 9, 36, 3, 1, 1, 1, 3),     # grouped, 4 in / 12 out per group
    (1, 6, 12, 12, 6, 3, 1, 1, 1, 6),     # depthwise
    (2, 40, 9, 9, 40, 5, 2, 2, 1, 40),    # depthwise 5x5 stride 2, batch 2
    (1, 64, 14, 14, 48, 1, 1, 0, 1, 1),   # 48 = 12 vectors of 4
]
DEFAULT_CONV = {5, 7, 9}  # indices in the default suite: strided+dilated, grouped, depthwise
MATMUL_CASES = [((1, 17), 11), ((4, 64), 40), ((2, 5, 36), 24), ((3, 130), 16)]
DEFAULT_MATMUL = {2}  # batched 3-D, 5 rows: odd for smmla's row pairs


def _ids(case) -> str:
    return "n{}c{}h{}w{}o{}k{}s{}p{}d{}g{}".format(*case)


def _table(cases, default: set[int], ids=None) -> list:
    """The cases, those outside ``default`` marked slow."""
    return [pytest.param(c, marks=() if i in default else pytest.mark.slow, id=ids(c) if ids else None)
            for i, c in enumerate(cases)]


def _check(program, board: str, cpu: str, x_codes: np.ndarray, want: np.ndarray, tmp_path, isa=None) -> None:
    """``program`` lowered for ``board`` runs ``want`` under emulation (its dot-product kernels on ``isa``)."""
    spec = get_target(board)
    mod = lower(program, spec)
    kernels = {k["kernel"] for k in kernel_table(mod).values()}
    assert any(k.startswith("int8") for k in kernels), kernels
    names = [gv.name_hint for gv in mod.functions if "int8_conv2d" in gv.name_hint or "int8_matmul" in gv.name_hint]
    assert isa is None or all(f"_{isa.name}" in name for name in names), names
    (got,) = run_lowered(mod, spec, [x_codes], tmp_path, cpu)
    np.testing.assert_array_equal(got, want)


@needs_emulator
@pytest.mark.parametrize("board,cpu,act,isa", PATHS)
@pytest.mark.parametrize("case", _table(CONV_CASES, DEFAULT_CONV, _ids))
def test_conv_bit_exact(case, board, cpu, act, isa, tmp_path):
    program, x_codes, want = conv_layer(case, *ACTIVATIONS[act], fixed=False, seed=sum(case))
    _check(program, board, cpu, x_codes, want, tmp_path, isa)


@needs_emulator
@pytest.mark.parametrize("board,cpu,act,isa", PATHS)
@pytest.mark.parametrize("case", _table(MATMUL_CASES, DEFAULT_MATMUL, lambda c: f"{c[0]}x{c[1]}"))
def test_matmul_bit_exact(case, board, cpu, act, isa, tmp_path):
    shape, n_out = case
    program, x_codes, want = matmul_layer(shape, n_out, *ACTIVATIONS[act], fixed=False, seed=n_out)
    _check(program, board, cpu, x_codes, want, tmp_path, isa)


KERNEL_CASES = [  # (N, C, H, W, O, k, stride, pad, dilation, groups): one kernel reading NHWC or NCHW directly
    (1, 3, 30, 30, 64, 7, 2, 3, 1, 1),   # stem: folds kernel columns (NHWC) or planes (NCHW) into the reduction
    (2, 3, 17, 15, 20, 5, 2, 2, 2, 1),   # dilated: no fold, odd output width
    (1, 10, 9, 11, 24, 3, 2, 0, 1, 2),   # grouped, 5 channels per group
]
KERNEL_PATHS = [pytest.param("graviton3", "max", SMMLA, id="smmla"),  # (board, qemu -cpu, one of the board's ISAs)
                pytest.param("graviton3", "max", UMMLA, id="ummla"),
                pytest.param("rpi5", "max", SDOT, id="sdot", marks=pytest.mark.slow),
                pytest.param("rpi5", "max", UDOT, id="udot", marks=pytest.mark.slow),
                pytest.param("rpi4", "cortex-a72", NEON, id="neon", marks=pytest.mark.slow)]


def _kernel_module(func, x: np.ndarray, weight: np.ndarray, out_shape: tuple[int, ...]):
    """A Relax ``main`` calling the scheduled kernel ``func`` once (what :func:`run_lowered` runs)."""
    bb = relax.BlockBuilder()
    data = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
    with bb.function("main", [data]):
        gvar = bb.add_func(func.without_attr("global_symbol"), "kernel")
        out = bb.emit(relax.call_tir(gvar, [data, relax.const(weight)], relax.TensorType(out_shape, "int32")))
        bb.emit_func_output(out)
    return bb.get()


@needs_emulator
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("board,cpu,isa", KERNEL_PATHS)
@pytest.mark.parametrize("case", _table(KERNEL_CASES, {0, 2}, _ids))
def test_conv_kernel_reads_either_layout(case, board, cpu, isa, layout, tmp_path):
    """The conv kernel alone on NHWC or NCHW input (the width folds and the padding value): for
    ``udot`` / ``ummla`` it computes ``Σ x · (w + 128)`` over the real taps (padded ones add nothing)."""
    n, c, h, w, o, k, stride, pad, dil, groups = case
    shape = ConvShape(n, h, w, c, o, k, k, (stride,) * 2, (pad,) * 4, (dil,) * 2, groups)
    rng = np.random.default_rng(sum(case))
    info, pad_value = np.iinfo(isa.act_dtype), -9 if isa.act_dtype == "int8" else 247
    x = rng.integers(info.min, info.max + 1, (n, c, h, w)).astype(isa.act_dtype)
    weight = rng.integers(-128, 128, (o, c // groups, k, k)).astype(np.int8)
    spec, data = get_target(board), x if layout == "NCHW" else x.transpose(0, 2, 3, 1).copy()
    func = schedule_int8(conv2d(shape, isa, pad_value, layout), spec.target).mod["main"]
    mod = _kernel_module(func, data, pack_conv_weight(weight, shape, isa, layout),
                         (n, shape.out_height, shape.out_width, o))
    (got,) = run_lowered(mod, spec, [data], tmp_path, cpu)
    want = numpy_conv(x.astype(np.int64), weight.astype(np.int64) + isa.weight_offset, stride, pad, dil, groups,
                      pad_value=pad_value).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(got, want)


@needs_emulator
@pytest.mark.parametrize("board,cpu", BOARD_CPUS)
def test_unsigned_activations_fixed_point_bit_exact(board, cpu, tmp_path):
    """uint8 activations (asymmetric, zero point padding) run on udot / ummla, or on a core
    without them through the int8 kernels shifted by -128; the epilogue requantizes in fixed
    point (integer only)."""
    case = (1, 8, 9, 9, 20, 3, 1, 1, 1, 1)
    program, x_codes, want = conv_layer(case, U8, 113, U8_OUT, fixed=True, seed=sum(case))
    _check(program, board, cpu, x_codes, want, tmp_path)


@pytest.mark.slow
@needs_emulator
@pytest.mark.parametrize("board,cpu", BOARD_CPUS)
@pytest.mark.parametrize("kind", ["conv", "matmul"])
def test_fixed_point_and_per_channel_clip_bit_exact(kind, board, cpu, tmp_path):
    """Integer-only requantization with an equalized ReLU6 (upper clip per output channel), on
    uint8 activations (the x86 test's case, whose data has rounding ties)."""
    rng = np.random.default_rng(6)
    hi = rng.integers(60, 256, 20)
    hi[:3] = (255, 60, 61)
    out = QOutput(scale=2 ** -5, zero=40, lo=40, hi=hi, dtype="uint8")
    if kind == "conv":
        program, x_codes, want = conv_layer((1, 8, 8, 8, 20, 3, 1, 1, 1, 1), U8, 9, out, True, seed=6)
    else:
        program, x_codes, want = matmul_layer((4, 48), 20, U8, 9, out, True, seed=6)
    _check(program, board, cpu, x_codes, want, tmp_path)


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    """A conv layer lowered and linked for each board, and a matmul layer for graviton3, on int8
    activations, and the same on uint8 ones ("-u8") for rpi5 and graviton3:
    {name: (library, lowered module, input codes)}."""
    layers = {act: (conv_layer((1, 16, 8, 8, 32, 3, 1, 1, 1, 1), *ACTIVATIONS[act], fixed=False, seed=2),
                    matmul_layer((4, 64), 24, *ACTIVATIONS[act], fixed=False, seed=3)) for act in ACTIVATIONS}
    out = {}
    for name, board, act, kind in (("rpi5", "rpi5", "int8", 0), ("rpi4", "rpi4", "int8", 0),
                                   ("graviton3", "graviton3", "int8", 0), ("graviton3-dense", "graviton3", "int8", 1),
                                   ("rpi5-u8", "rpi5", "uint8", 0), ("graviton3-u8", "graviton3", "uint8", 0),
                                   ("graviton3-dense-u8", "graviton3", "uint8", 1)):
        program, x, _ = layers[act][kind]
        spec = get_target(board)
        mod = lower(program, spec)
        out[name] = (library(mod, spec, tmp_path_factory.mktemp(name) / "kernels.so"), mod, x)
    return out


@needs_emulator
def test_disassembly_holds_the_isa_instructions(libraries):
    sdot, neon, smmla, smmla_dense, udot, ummla, ummla_dense = (disassembly(libraries[b][0]) for b in (
        "rpi5", "rpi4", "graviton3", "graviton3-dense", "rpi5-u8", "graviton3-u8", "graviton3-dense-u8"))
    assert "\tsdot\t" in sdot and "\tsmmla\t" in smmla and "\tsmmla\t" in smmla_dense
    assert "\tsdot\t" not in smmla and "\tsdot\t" not in smmla_dense
    assert "\tsdot\t" not in neon and "\tsmull\t" in neon and "\tsadalp\t" in neon
    assert "\tudot\t" in udot and "\tsdot\t" not in udot and "\tudot\t" not in sdot
    for code in (ummla, ummla_dense):
        assert "\tummla\t" in code and not any(f"\t{i}\t" in code for i in ("smmla", "sdot", "udot"))


@needs_emulator
@pytest.mark.parametrize("name,board,lacking,having", [("rpi5", "rpi5", "cortex-a53", "cortex-a76"),
                                                       ("graviton3", "graviton3", "cortex-a76", "max"),
                                                       ("graviton3-u8", "graviton3", "cortex-a76", "max")],
                         ids=["sdot", "smmla", "ummla"])
def test_code_dies_on_a_core_without_the_extension(libraries, name, board, lacking, having, tmp_path):
    """The kernels really execute sdot (smmla, ummla): on a Cortex-A53 without dotprod (a
    Cortex-A76 without i8mm) they raise SIGILL, on a core that has it they run."""
    _, mod, x = libraries[name]
    with pytest.raises(RuntimeError, match="exited"):
        run_lowered(mod, get_target(board), [x], tmp_path, lacking)
    run_lowered(mod, get_target(board), [x], tmp_path, having)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_presets(board):
    spec = get_target(board)
    cpu, mattr, cores, _ = BOARDS[board]
    assert spec.target_json == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": cpu, "mattr": mattr,
                                "num-cores": cores}
    assert spec.arch == "aarch64" and not spec.runs_on_host() and spec.quant_scheme == "int8_sym"
    assert spec.cross_compiler == "aarch64-linux-gnu-gcc"
    isa, unsigned = (SMMLA, UMMLA) if "+i8mm" in mattr else (SDOT, UDOT) if "+dotprod" in mattr else (NEON, None)
    assert f"int8 via {isa.instruction}" in spec.description and "neon" in spec.isa
    kernels = {(s.dtypes[0], s.kernel.split()[0]) for s in spec.accelerates if s.integer and s.op != "depthwise_conv2d"}
    assert kernels == {("int8", isa.instruction)} | ({("uint8", unsigned.instruction)} if unsigned else set()), kernels
    assert not unsigned or f"uint8 activations via {unsigned.instruction}" in spec.description
    assert spec.description.endswith(f"bit-serial via {spec.bitserial.instruction}")
    assert spec.integer_ops == {"conv2d", "grouped_conv2d", "depthwise_conv2d", "matmul"}


def test_squeeze_targets_lists_the_boards(capsys):
    from compiler.cli import main

    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line and not line[0].isspace()}
    assert set(BOARDS) <= listed, out
    assert "Raspberry Pi 5" in out and "sdot" in out and "smull+sadalp" in out


def test_missing_cross_compiler_fails_before_compiling(monkeypatch, tmp_path):
    """One line with the install hint, from the API and the CLI (exit 2), before any pass runs."""
    import compiler
    from conftest import squeeze

    from compiler import zoo

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SqueezeError, match="apt-get install gcc-aarch64-linux-gnu"):
        compiler.compile("/nonexistent/model.onnx", "rpi5")
    proc = squeeze("compile", zoo.model_path("fmnist-resnet8"), "--target", "rpi5", "-o", tmp_path / "a.tar")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "aarch64-linux-gnu-gcc not found" in lines[0] and "apt-get install gcc-aarch64-linux-gnu" in lines[0]
    assert not (tmp_path / "a.tar").exists()


def test_unknown_board_lists_the_valid_ones(capsys):
    from compiler.cli import main

    assert main(["compile", "model.onnx", "--target", "rpi9", "-o", "a.tar"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown target 'rpi9'" in err and "rpi5" in err and "graviton3" in err


@needs_emulator
def test_cli_cross_compiles_the_bundled_model(tmp_path):
    """``squeeze compile --target rpi5 --quantize int8``: an aarch64 library holding sdot, a
    manifest with triple and CPU, s8 activations; ``squeeze run`` on x86 refuses it in one line."""
    from conftest import squeeze

    from compiler import zoo

    calib, art = tmp_path / "calib.npz", tmp_path / "rpi5.tar"
    np.savez(calib, input=zoo.bundled_slice()["calib"][:8])
    proc = squeeze("compile", zoo.model_path("fmnist-resnet8"), "--target", "rpi5", "--quantize", "int8",
                   "--calib", calib, "-o", art)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(art) as tar:
        tar.extractall(tmp_path / "art", filter="data")
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    target = manifest["target"]
    assert (target["triple"], target["arch"], target["cpu"]) == ("aarch64-linux-gnu", "aarch64", "cortex-a76")
    assert "dotprod" in target["isa"]
    assert manifest["summary"]["quantization"]["scheme"] == "w8_sym_per_channel__a8_sym_per_tensor"
    lib = tmp_path / "art" / "lib.so"
    kind = subprocess.run(["file", "-b", lib], capture_output=True, text=True).stdout
    assert "ARM aarch64" in kind and "\tsdot\t" in disassembly(lib)
    proc = squeeze("run", art, "--inputs", calib)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "artifact built for aarch64" in lines[0], lines[0]


@needs_emulator
def test_host_binary_runs_under_qemu(tmp_path):
    proc = subprocess.run(["qemu-aarch64", "-L", SYSROOT, host_binary(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr



@pytest.mark.slow
@needs_emulator
def test_whole_model_bit_identical_on_arm_and_x86(tmp_path):
    """Quantized ResNet-8 (batch 4, integer-only requantization): every ARM path under emulation
    gives the x86 library's outputs bit for bit — the same integer IR, two targets."""
    import tvm
    from tvm import relax

    from compiler import zoo
    from compiler.build import build
    from compiler.config import QuantConfig
    from compiler.frontend import import_onnx
    from compiler.pipeline import Recipe, run_passes

    data = zoo.bundled_slice()
    program = import_onnx(zoo.model_path("fmnist-resnet8"), {"input": (4, 1, 28, 28)})
    config = QuantConfig("w8_sym_per_channel__a8_sym_per_tensor__fixed_point",
                         calibration={"input": data["calib"][:64]})
    program = run_passes(program, Recipe.cleanups() + config.recipe(progress=False))
    images = data["test_x"][:4]
    x86 = relax.VirtualMachine(build(program, get_target("x86")), tvm.cpu())["main"](tvm.runtime.tensor(images))
    for board, cpu in (("rpi5", "max"), ("rpi4", "cortex-a72"), ("graviton3", "max")):
        (got,) = run_lowered(lower(program, get_target(board)), get_target(board), [images], tmp_path, cpu)
        np.testing.assert_array_equal(got, x86.numpy(), err_msg=board)
