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
def rpc_server(python: str, timeout: float, log: Path | None = None) -> Iterator[str]:
    """``python -m tvm.exec.rpc_server`` on a free port of 127.0.0.1, in its own process group;
    yields ``host:port`` once it listens (fails the test after ``timeout`` s, with the tail of
    ``log``, its stderr, when it died) and kills the group after."""
    port = _free_port()
    with open(log or os.devnull, "w") as stderr:
        server = subprocess.Popen([python, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                                   "--port-end", str(port + 1)], stdout=subprocess.DEVNULL, stderr=stderr,
                                  start_new_session=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and server.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            died = server.poll() is not None and log is not None
            pytest.fail(f"RPC server did not start: {log.read_text()[-2000:] if died else f'not listening in {timeout:g} s'}")
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


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
