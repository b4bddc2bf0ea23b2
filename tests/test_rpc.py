"""Run an artifact through a real TVM RPC server on 127.0.0.1."""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from conftest import squeeze
from graphs import assert_close_to_scale, run_ort, small_cnn

import compiler


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _listening(python: str, module: str, timeout: float,
               runs: list[tuple[Path | None, list[str]]]) -> Iterator[list[str]]:
    """``python -m module --host 127.0.0.1 --port P *args`` for each ``(log, args)`` of ``runs``, each on
    a free port P in its own process group, all started at once; yields their ``127.0.0.1:P`` once
    all listen (fails the test after ``timeout`` s, with the tail of the log, its stderr, of one
    that died) and kills the groups after."""
    procs = []
    try:
        for log, args in runs:
            port = _free_port()
            with open(log or os.devnull, "w") as stderr:
                procs.append((subprocess.Popen([python, "-m", module, "--host", "127.0.0.1", "--port", str(port),
                                                "--port-end", str(port + 1), *args], stdout=subprocess.DEVNULL,
                                               stderr=stderr, start_new_session=True), port, log))
        deadline = time.time() + timeout
        for proc, port, log in procs:
            while time.time() < deadline and proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            else:
                died = proc.poll() is not None and log is not None
                why = log.read_text()[-2000:] if died else f"not listening in {timeout:g} s"
                pytest.fail(f"{module} did not start: {why}")
        yield [f"127.0.0.1:{port}" for _, port, _ in procs]
    finally:
        for proc, _, _ in procs:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def registered(tracker: str, key: str) -> list[str]:
    """The arguments that register an RPC server at ``tracker`` (``host:port``) under ``key``."""
    return ["--tracker", tracker, "--key", key]


def rpc_servers(python: str, timeout: float,
                runs: list[tuple[Path | None, list[str]]]) -> contextlib.AbstractContextManager[list[str]]:
    """TVM's RPC servers run by ``python``, one per ``(log, args)`` (see :func:`_listening`;
    ``args``: e.g. :func:`registered`), started at once; yields their addresses."""
    return _listening(python, "tvm.exec.rpc_server", timeout, runs)


@contextlib.contextmanager
def rpc_server(python: str, timeout: float, log: Path | None = None) -> Iterator[str]:
    """One TVM RPC server run by ``python`` (see :func:`rpc_servers`); yields ``host:port``."""
    with rpc_servers(python, timeout, [(log, [])]) as (address,):
        yield address


@contextlib.contextmanager
def rpc_tracker(timeout: float = 60, log: Path | None = None) -> Iterator[str]:
    """TVM's RPC tracker, run by this Python (see :func:`_listening`); skips the test without tornado."""
    pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado: pip install tornado (requirements.txt)")
    with _listening(sys.executable, "tvm.exec.rpc_tracker", timeout, [(log, [])]) as (address,):
        yield address


@pytest.fixture(scope="module")
def rpc_address():
    with rpc_server(sys.executable, 60) as address:
        yield address


def test_rpc_run_matches_onnxruntime(cnn_artifact, cnn_input, rpc_address):
    module = compiler.load(cnn_artifact, rpc=rpc_address)
    out = module.run({"input": cnn_input})
    assert_close_to_scale(next(iter(out.values())), run_ort(small_cnn(), {"input": cnn_input})[0])
    assert module.benchmark({"input": cnn_input}, repeat=3)["median_ms"] > 0


def test_cli_rpc(cnn_artifact, cnn_input, rpc_address, tmp_path):
    np.savez(tmp_path / "x.npz", input=cnn_input)
    proc = squeeze("run", cnn_artifact, "--inputs", tmp_path / "x.npz", "--rpc", rpc_address, "--print-time")
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout


def test_rpc_unreachable(cnn_artifact, tmp_path):
    np.savez(tmp_path / "x.npz", input=np.zeros((1, 3, 16, 16), np.float32))
    proc = squeeze("run", cnn_artifact, "--inputs", tmp_path / "x.npz", "--rpc", f"127.0.0.1:{_free_port()}")
    assert proc.returncode == 2 and "cannot reach RPC server" in proc.stderr and "Traceback" not in proc.stderr
