"""The real ``squeeze`` command in a subprocess, good and bad inputs."""
import numpy as np
import onnx
import pytest
from conftest import squeeze
from graphs import GraphBuilder, small_cnn


def _one_line_error(proc, match: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("squeeze: error:"), proc.stderr
    assert "Traceback" not in proc.stderr and match in lines[0], lines[0]


def test_compile_run_inspect(cnn_path, tmp_path, cnn_input):
    art, dump = tmp_path / "m.tar", tmp_path / "ir"
    proc = squeeze("compile", cnn_path, "-o", art, "--dump-ir", dump)
    assert proc.returncode == 0, proc.stderr
    assert art.exists() and (dump / "02_fold_bn.py").exists()
    np.savez(tmp_path / "x.npz", input=cnn_input)
    proc = squeeze("run", art, "--inputs", tmp_path / "x.npz", "--outputs", tmp_path / "y.npz",
                   "--print-time", "--repeat", "5")
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout and "std" in proc.stdout
    from graphs import run_ort

    y = np.load(tmp_path / "y.npz")
    np.testing.assert_allclose(y[y.files[0]], run_ort(small_cnn(), {"input": cnn_input})[0], rtol=1e-4, atol=1e-4)
    for path in (cnn_path, art):
        proc = squeeze("inspect", path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count(" conv2d ") == 2 and "total" in proc.stdout


def test_targets_lists_x86_and_llvm():
    proc = squeeze("targets")
    assert proc.returncode == 0 and "x86" in proc.stdout and "llvm" in proc.stdout
    assert "accelerates: conv2d[float32]" in proc.stdout


def test_targets_listing_is_reused_without_importing_tvm(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "SQUEEZE_CACHE": str(tmp_path)}
    code = ("import sys; from compiler.cli import main; main(['targets']); "
            "print('tvm imported' if 'tvm' in sys.modules else 'tvm not imported', file=sys.stderr)")
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
                     for _ in range(2))
    assert first.stdout == second.stdout and "x86" in first.stdout
    assert "tvm imported" in first.stderr and "tvm not imported" in second.stderr


def _unsupported(path):
    g = GraphBuilder()
    out = g.op("Celu", [g.op("Relu", ["input"])], name="my_celu")
    onnx.save(g.model({"input": (1, 4)}, out, (1, 4)), path)


@pytest.mark.parametrize("setup, match", [
    (lambda p: None, "model file not found"),
    (lambda p: p.write_text("hello, not a model\n"), "ONNX"),
    (lambda p: p.write_bytes(small_cnn().SerializeToString()[:400]), "ONNX"),
    (_unsupported, "unsupported ONNX ops: Celu (my_celu)"),
], ids=["missing", "text_file", "truncated", "unsupported_op"])
def test_compile_bad_model(tmp_path, setup, match):
    model = tmp_path / "m.onnx"
    setup(model)
    _one_line_error(squeeze("compile", model, "-o", tmp_path / "out.tar"), match)
    assert not (tmp_path / "out.tar").exists()


def test_unknown_target(cnn_path, tmp_path):
    _one_line_error(squeeze("compile", cnn_path, "--target", "tpu9", "-o", tmp_path / "o.tar"),
                    "unknown target 'tpu9': choose one of")


@pytest.mark.parametrize("out, match", [("nodir/o.tar", "does not exist"), ("/proc/o.tar", "cannot write")])
def test_unwritable_output(cnn_path, tmp_path, out, match):
    dest = tmp_path / out if not out.startswith("/") else out
    _one_line_error(squeeze("compile", cnn_path, "-o", dest), match)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("array, match", [
    (np.zeros((1, 3, 8, 8), np.float32), "has shape [1, 3, 8, 8], the model expects [1, 3, 16, 16]"),
    (np.zeros((1, 3, 16, 16), np.int64), "dtype int64"),
], ids=["shape", "dtype"])
def test_run_bad_inputs(cnn_artifact, tmp_path, array, match):
    np.savez(tmp_path / "x.npz", input=array)
    _one_line_error(squeeze("run", cnn_artifact, "--inputs", tmp_path / "x.npz", "--outputs", tmp_path / "y.npz"),
                    match)
    assert not (tmp_path / "y.npz").exists()


def test_run_corrupted_artifact(cnn_artifact, tmp_path):
    bad = tmp_path / "bad.tar"
    data = bytearray(cnn_artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    np.savez(tmp_path / "x.npz", input=np.zeros((1, 3, 16, 16), np.float32))
    _one_line_error(squeeze("run", bad, "--inputs", tmp_path / "x.npz"), "corrupted")
