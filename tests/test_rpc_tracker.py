"""Fleet tuning through TVM's RPC tracker (``squeeze tune --rpc-tracker HOST:PORT --rpc-key KEY``).

The fast tests check that a tracker that cannot be reached or does not answer is one line
(exit code 2) and no hang. The slow one starts a tracker (no board under the key yet: one
line too), then two emulated aarch64 boards (``tests/arm_sysroot.py`` under ``qemu-aarch64``)
registered under one key, tunes the small CNN for rpi5 through the tracker, and requires:
candidates measured on both boards (each server logs ``load_module .../tuned.so`` per
measurement it served), every kept kernel checked on a board (where a wrong kernel is
rejected), and the artifact compiled from the database on a board agreeing with ONNX Runtime
and with the untuned artifact.
"""
import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import tvm
from arm_sysroot import python as sysroot_python
from conftest import squeeze
from graphs import assert_close_to_scale, run_ort, small_cnn
from test_rpc import _free_port, registered, rpc_servers, rpc_tracker
from tvm import te
from tvm.s_tir import meta_schedule as ms

import compiler
import compiler.tune
from compiler.artifact import Artifact
from compiler.cli import main
from compiler.verify import CACHE, check_tuned
from targets import get_target

KEY = "rpi5"
MEASURED = "/tuned.so"  # how a server logs loading a candidate of compiler.tune (the device check's is kernel.so)


def _tune_error(cnn_path, tmp_path, tracker: str, capsys) -> str:
    """The one line ``squeeze tune`` through ``tracker`` fails with (exit code 2, nothing written)."""
    code = main(["tune", str(cnn_path), "--target", "rpi5", "--rpc-tracker", tracker, "--rpc-key", KEY,
                 "--trials", "8", "--tuning-db", str(tmp_path / "db")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert [line for line in lines if not line.startswith("pass ")] == lines[-1:]  # progress, then one line
    assert not (tmp_path / "db").exists()
    return lines[-1]


@pytest.mark.parametrize("case", ["refused", "silent port"])
def test_unreachable_tracker_is_one_line(case, cnn_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compiler.tune, "TRACKER_TIMEOUT_S", 1.0)
    start = time.monotonic()
    if case == "refused":
        err = _tune_error(cnn_path, tmp_path, f"127.0.0.1:{_free_port()}", capsys)
        assert "(Connection refused): start one with python -m tvm.exec.rpc_tracker" in err
    else:  # accepts connections, never answers
        with socket.create_server(("127.0.0.1", 0)) as silent:
            err = _tune_error(cnn_path, tmp_path, f"127.0.0.1:{silent.getsockname()[1]}", capsys)
        assert "is not answering as an RPC tracker (no answer in 1 s)" in err
    assert time.monotonic() - start < 60
    assert all(t.daemon for t in threading.enumerate() if t is not threading.main_thread())  # exit not held


def _boards(tracker: str) -> int:
    host, port = tracker.rsplit(":", 1)
    info = tvm.rpc.connect_tracker(host, int(port)).summary()["server_info"]
    return sum(item["key"] == f"server:{KEY}" for item in info)


def _wait_for_boards(tracker: str, count: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while _boards(tracker) < count:
        if time.time() > deadline:
            pytest.fail(f"{count} boards did not register at the tracker in {timeout:g} s")
        time.sleep(0.5)


def _emulated_board() -> str:
    python = sysroot_python()
    if python is None or shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("no aarch64 sysroot or cross compiler: build them with `make arm-sysroot`")
    return str(python)


@pytest.mark.slow
def test_fleet_tuning_on_two_emulated_boards(cnn_path, cnn_input, tmp_path, capsys):
    python, db = _emulated_board(), tmp_path / "db"
    logs = [tmp_path / "board0.log", tmp_path / "board1.log"]
    with rpc_tracker() as tracker:
        assert _tune_error(cnn_path, tmp_path, tracker, capsys).endswith(
            f"no board is registered under key '{KEY}' at the RPC tracker {tracker}: start them with "
            f"python -m tvm.exec.rpc_server --tracker {tracker} --key {KEY}")
        boards = [(log, registered(tracker, KEY)) for log in logs] + [(tmp_path / "board.log", [])]
        with rpc_servers(python, 600, boards) as (*_, board):  # the last one, not at the tracker, runs the artifacts
            _wait_for_boards(tracker, 2, 120)
            proc = squeeze("tune", cnn_path, "--target", "rpi5", "--rpc-tracker", tracker, "--rpc-key", KEY,
                           "--trials", "16", "--tuning-db", db)
            _check_tuned_artifact(proc, logs, cnn_path, cnn_input, db, board, tmp_path)
            _check_wrong_kernel_is_rejected_on_board(tracker, tmp_path / "wrong")


def _check_wrong_kernel_is_rejected_on_board(tracker: str, database) -> None:
    """The device check of compiler.tune keeps a kernel that computes what the untuned one does
    (``A + A`` for ``2 * A``) and rejects one that does not (``2 * A + 1``), by running them on a board."""
    spec = get_target("rpi5")
    database.mkdir()
    host, port = tracker.rsplit(":", 1)
    fleet = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=KEY, session_timeout_sec=120)
    a = te.placeholder((4, 16), name="A")
    right, same, wrong = (te.create_prim_func([a, te.compute(a.shape, f, name="B")])
                          for f in (lambda i, j: a[i, j] * 2.0, lambda i, j: a[i, j] + a[i, j],
                                    lambda i, j: a[i, j] * 2.0 + 1.0))
    untuned = tvm.IRModule({"kernel": right})
    gvar = untuned.get_global_var("kernel")
    for func, kept in ((same, True), (wrong, False)):
        out = check_tuned(untuned, tvm.IRModule({gvar: func}), spec.target, None, database,
                          run=compiler.tune._on_board(fleet, spec))
        assert out[gvar].same_as(func if kept else right)
    assert sorted(json.loads((database / CACHE).read_text()).values()) == [False, True]


def _check_tuned_artifact(proc, logs, cnn_path, cnn_input, db, board: str, tmp_path) -> None:
    """Both boards measured, every kept kernel was checked on a board, and the artifact compiled
    from ``db`` runs on ``board`` as ONNX Runtime and the untuned artifact do."""
    assert proc.returncode == 0, proc.stderr
    measured = [sum(line.endswith(MEASURED) for line in log.read_text().splitlines()) for log in logs]
    assert all(measured), f"candidates measured per board: {measured}"
    verdicts = json.loads((db / CACHE).read_text())
    assert verdicts and all(verdicts.values())
    assert f"checked {len(verdicts)} tuned kernels on a board against their untuned versions: all agree" \
           in proc.stdout

    tuned, untuned = tmp_path / "tuned.tar", tmp_path / "untuned.tar"
    proc = squeeze("compile", cnn_path, "--target", "rpi5", "--tuning-db", db, "-o", tuned)
    assert proc.returncode == 0 and "is not used" not in proc.stderr, proc.stderr
    compiler.compile(cnn_path, "rpi5").save(untuned)
    assert Artifact.read(tuned).library_of("lib.so") != Artifact.read(untuned).library_of("lib.so")
    np.savez(tmp_path / "x.npz", input=cnn_input)
    proc = squeeze("run", tuned, "--inputs", tmp_path / "x.npz", "--rpc", board, "--outputs", tmp_path / "y.npz")
    assert proc.returncode == 0, proc.stderr
    expected = compiler.load(untuned, rpc=board).run({"input": cnn_input})
    with np.load(tmp_path / "y.npz") as y:
        got = {k: y[k] for k in y.files}
    assert list(got) == list(expected)
    reference = run_ort(small_cnn(), {"input": cnn_input})[0]
    for name, value in got.items():
        assert_close_to_scale(value, reference)
        np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-5 * np.abs(expected[name]).max())
