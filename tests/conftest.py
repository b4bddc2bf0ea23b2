import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TVM_NUM_THREADS", "2")
sys.path.insert(0, os.path.dirname(__file__))

import compiler.build  # noqa: E402,F401  (the driver registers the host builder passes run calibration data on)
from graphs import small_cnn  # noqa: E402


@pytest.fixture(scope="session")
def cnn_path(tmp_path_factory):
    import onnx

    path = tmp_path_factory.mktemp("models") / "cnn.onnx"
    onnx.save(small_cnn(), path)
    return path


@pytest.fixture(scope="session")
def cnn_artifact(cnn_path, tmp_path_factory):
    import compiler

    path = tmp_path_factory.mktemp("art") / "cnn.tar"
    compiler.compile(cnn_path).save(path)
    return path


@pytest.fixture
def cnn_input():
    return np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)


def squeeze(*args, cwd=None) -> subprocess.CompletedProcess:
    """Run the real ``squeeze`` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=900)
