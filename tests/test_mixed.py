"""Per-layer sensitivity: one layer quantized at a time, table and bar chart."""
import numpy as np
from conftest import squeeze
from graphs import small_cnn

from compiler.frontend import import_onnx
from compiler.pipeline import Recipe, run_passes
from compiler.sensitivity import sensitivity, sqnr_db


def test_sqnr():
    x = np.ones(100)
    assert sqnr_db(x, x) == float("inf")
    assert abs(sqnr_db(x, x * 1.1) - 20.0) < 1e-9


def test_sensitivity_scans_every_layer():
    calib = {"input": np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)}
    program = run_passes(import_onnx(small_cnn()), Recipe.cleanups())
    results = sensitivity(program, calib, "int8", samples=4, progress=False)
    assert [r.op for r in results] == ["conv2d", "conv2d", "matmul"]
    assert all(15 < r.sqnr_db < 80 for r in results), results
    # 4-bit weights are measurably noisier than 8-bit ones, layer by layer
    int4 = sensitivity(program, calib, "int4", samples=4, progress=False)
    assert all(a.sqnr_db > b.sqnr_db for a, b in zip(results, int4))


def test_cli_sensitivity_table_and_plot(cnn_path, tmp_path):
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32))
    proc = squeeze("inspect", cnn_path, "--sensitivity", "--calib", tmp_path / "calib.npz",
                   "--plot", tmp_path / "s.png")
    assert proc.returncode == 0, proc.stderr
    assert "sqnr_db" in proc.stdout and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    proc = squeeze("inspect", cnn_path, "--sensitivity")
    assert proc.returncode == 2 and "needs calibration data" in proc.stderr
