"""Deploy bundles (``squeeze export ART --board NAME``) and whole models on an emulated AArch64 board.

The fast tests check a bundle's contents, its run.py on this host and the one-line errors. The
slow ones run the bundled Fashion-MNIST ResNet-8 and the zoo's ResNet-18 (on real photos),
compiled for rpi5 and for x86 with integer-only requantization, under ``qemu-aarch64`` in the
sysroot of ``tests/arm_sysroot.py`` (run.py, and TVM's RPC server) and require outputs
bit-identical to x86's.
"""
import ast
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from arm_emu import disassembly
from arm_sysroot import python as sysroot_python
from test_rpc import rpc_server

import compiler
from compiler import zoo
from compiler.cli import main
from compiler.deploy import pip_line
from compiler.zoo.photos import calibration_photos, photos

CROSS = shutil.which("aarch64-linux-gnu-gcc")
NO_CROSS = "no aarch64-linux-gnu-gcc: apt-get install gcc-aarch64-linux-gnu"
needs_cross = pytest.mark.skipif(CROSS is None, reason=NO_CROSS)
# The ARM kernels' s8 x s8 scheme (int8_sym) with integer-only requantization: one integer IR both targets run
INTEGER_ONLY = "w8_sym_per_channel__a8_sym_per_tensor__fixed_point"
BUNDLE = {"lib.so", "lib_b2.so", "manifest.json", "run.py", "README.txt"}


def _sysroot():
    wrapper = sysroot_python()
    if wrapper is None:
        pytest.skip("no aarch64 sysroot: build it with `make arm-sysroot` (python tests/arm_sysroot.py)")
    return wrapper


@pytest.fixture(scope="module")
def rpi5_cnn(cnn_path, tmp_path_factory):
    """The small CNN compiled for rpi5 (FP32), batches 1 and 2."""
    if CROSS is None:
        pytest.skip(NO_CROSS)
    path = tmp_path_factory.mktemp("rpi5") / "cnn-rpi5.tar"
    compiler.compile(cnn_path, "rpi5", batch_sizes=[1, 2]).save(path)
    return path


def _export(capsys, *args):
    code = main(["export", *map(str, args)])
    return code, capsys.readouterr().err


@needs_cross
def test_bundle_contents(rpi5_cnn, tmp_path, capsys):
    out = tmp_path / "deploy"
    for _ in range(2):  # a second export replaces the first bundle
        code, err = _export(capsys, rpi5_cnn, "--board", "rpi5", "-o", out)
        assert code == 0, err
    assert {p.name for p in out.iterdir()} == BUNDLE
    assert [p.name for p in tmp_path.iterdir()] == ["deploy"]  # no temporary folder left
    art = compiler.artifact.Artifact.read(rpi5_cnn)
    assert json.loads((out / "manifest.json").read_text()) == art.manifest.to_json()
    for name in ("lib.so", "lib_b2.so"):
        assert (out / name).read_bytes() == art.library_of(name)
    readme = (out / "README.txt").read_text()
    assert pip_line() == "pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 numpy"
    for line in (pip_line(), "python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090",
                 "squeeze run cnn-rpi5.tar --rpc BOARD_ADDRESS:9090", "python run.py --inputs x.npz"):
        assert line in readme
    tree = ast.parse((out / "run.py").read_text())
    imported = {n.names[0].name.split(".")[0] if isinstance(n, ast.Import) else n.module.split(".")[0]
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))}
    assert imported <= {"__future__", "argparse", "json", "os", "platform", "statistics", "sys", "pathlib",
                        "numpy", "tvm"}


def test_run_script_on_this_host(cnn_path, cnn_input, tmp_path, capsys):
    """run.py of an x86 bundle, run here, gives what compiler.load gives; bad inputs are one line."""
    art = tmp_path / "cnn.tar"
    compiler.compile(cnn_path, batch_sizes=[1, 2]).save(art)
    host = compiler.artifact.Artifact.read(art).manifest.target["name"]
    code, err = _export(capsys, art, "--board", host, "-o", tmp_path / "deploy")
    assert code == 0, err
    x = np.concatenate([cnn_input, -cnn_input])  # batch 2: the second library
    np.savez(tmp_path / "x.npz", input=x)
    run = [sys.executable, tmp_path / "deploy" / "run.py", "--inputs", tmp_path / "x.npz"]
    proc = subprocess.run([*run, "--outputs", tmp_path / "y.npz", "--repeat", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout
    expected = compiler.load(art).run({"input": x})
    with np.load(tmp_path / "y.npz") as y:
        assert y.files == list(expected) and all(np.array_equal(y[k], v) for k, v in expected.items())
    np.savez(tmp_path / "x.npz", image=x)
    proc = subprocess.run(run, capture_output=True, text=True)
    assert proc.returncode == 2 and "the model takes ['input']" in proc.stderr and "Traceback" not in proc.stderr


@needs_cross
@pytest.mark.parametrize("case", ["x86 artifact", "unknown board", "board lacks dotprod", "not a bundle",
                                  "quantize option"])
def test_bundle_errors(case, rpi5_cnn, cnn_artifact, tmp_path, capsys):
    out = tmp_path / "deploy"
    args, expected = {
        "x86 artifact": ([cnn_artifact, "--board", "rpi5"], "is compiled for x86_64 (target x86), board rpi5 is "
                                                            "aarch64: recompile it with --target rpi5"),
        "unknown board": ([rpi5_cnn, "--board", "rpi6"], "unknown board 'rpi6': choose one of aarch64, graviton3, "
                                                         "jetson-orin-cpu"),
        "board lacks dotprod": ([rpi5_cnn, "--board", "rpi4"], "needs CPU extensions board rpi4 lacks"),
        "not a bundle": ([rpi5_cnn, "--board", "rpi5"], "exists and is not an earlier output of this command"),
        "quantize option": ([rpi5_cnn, "--board", "rpi5", "--quantize", "int8"], "drop --quantize"),
    }[case]
    if case == "not a bundle":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    code, err = _export(capsys, *args, "-o", out)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == (["deploy"] if case == "not a bundle" else [])
    if case == "not a bundle":
        assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    """The bundled ResNet-8 compiled for rpi5 and x86 (integer-only requantization, batch 8), and 8 test images."""
    _sysroot()
    if CROSS is None:
        pytest.skip(NO_CROSS)
    data, tmp = zoo.bundled_slice(), tmp_path_factory.mktemp("fmnist")
    config = compiler.QuantConfig(INTEGER_ONLY, calibration={"input": data["calib"][:64]})
    arts = {}
    for target in ("rpi5", "x86"):
        arts[target] = tmp / f"fmnist-{target}.tar"
        compiler.compile(zoo.model_path("fmnist-resnet8"), target, input_shapes={"input": (8, 1, 28, 28)},
                         quantize=config).save(arts[target])
    x = data["test_x"][:8]
    return arts, x, compiler.load(arts["x86"]).run({"input": x})


def _bundle_outputs(art, board: str, x: np.ndarray, tmp_path, capsys, repeat: int = 2) -> dict[str, np.ndarray]:
    """``art`` exported for ``board`` and its run.py run on ``x`` under qemu-aarch64: the outputs."""
    code, err = _export(capsys, art, "--board", board, "-o", tmp_path / "deploy")
    assert code == 0, err
    np.savez(tmp_path / "x.npz", input=x)
    proc = subprocess.run([_sysroot(), tmp_path / "deploy" / "run.py", "--inputs", tmp_path / "x.npz", "--outputs",
                           tmp_path / "y.npz", "--repeat", str(repeat)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout
    with np.load(tmp_path / "y.npz") as y:
        return {name: y[name] for name in y.files}


def _assert_identical(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(got) == list(expected)
    for name, want in expected.items():
        assert np.array_equal(got[name], want), f"{name}: max |arm - x86| {np.abs(got[name] - want).max()}"


@pytest.mark.slow
def test_fmnist_bundle_under_qemu_bit_identical_to_x86(fmnist, tmp_path, capsys):
    arts, x, expected = fmnist
    _assert_identical(_bundle_outputs(arts["rpi5"], "rpi5", x, tmp_path, capsys), expected)
    assert len(set(expected["output"].argmax(1))) > 1  # real images, not a constant output


@pytest.mark.slow
@needs_cross
@pytest.mark.parametrize("scheme,instruction", [(INTEGER_ONLY, "sdot"), ("int8_integer_only", "udot")],
                         ids=["s8-sdot", "u8-udot"])
def test_resnet18_under_qemu_bit_identical_to_x86(scheme, instruction, tmp_path, capsys):
    """ResNet-18 (zoo weights, BN folded) on two real photos, integer-only requantization: the
    rpi5 bundle under qemu gives x86's outputs bit for bit, on int8 activations (sdot) and on
    uint8 ones (udot with the window-sum correction; x86 runs vpdpbusd on them as they are)."""
    _sysroot()
    try:
        model = zoo.model_path("resnet18")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    x = photos()[[0, 45]]  # two different photos (astronaut, coffee)
    config = compiler.QuantConfig(scheme, calibration={"input": calibration_photos()[:8]})
    arts = {}
    for target in ("rpi5", "x86"):
        arts[target] = tmp_path / f"resnet18-{target}.tar"
        compiler.compile(model, target, input_shapes={"input": x.shape}, quantize=config).save(arts[target])
    expected = compiler.load(arts["x86"]).run({"input": x})
    got = _bundle_outputs(arts["rpi5"], "rpi5", x, tmp_path, capsys, repeat=1)
    code = disassembly(tmp_path / "deploy" / "lib.so")
    assert f"\t{instruction}\t" in code and {"sdot": "\tudot\t", "udot": "\tsdot\t"}[instruction] not in code
    _assert_identical(got, expected)
    assert len(set(expected["output"].argmax(1))) > 1


@pytest.fixture
def arm_rpc_server(tmp_path):
    """``python -m tvm.exec.rpc_server`` under qemu-aarch64 on 127.0.0.1."""
    # two emulated interpreters import TVM (~20 s each) before it binds
    with rpc_server(_sysroot(), 240, tmp_path / "rpc_server.log") as address:
        yield address


@pytest.mark.slow
def test_fmnist_rpc_under_qemu_bit_identical_to_x86(fmnist, arm_rpc_server, tmp_path, capsys):
    arts, x, expected = fmnist
    np.savez(tmp_path / "x.npz", input=x)
    code = main(["run", str(arts["rpi5"]), "--rpc", arm_rpc_server, "--inputs", str(tmp_path / "x.npz"),
                 "--outputs", str(tmp_path / "y.npz"), "--print-time", "--repeat", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "median" in captured.out
    with np.load(tmp_path / "y.npz") as y:
        for name, want in expected.items():
            assert np.array_equal(y[name], want), f"{name}: max |arm - x86| {np.abs(y[name] - want).max()}"
