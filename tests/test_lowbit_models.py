"""Low-bit ResNet-8s trained here with QAT (compiler/zoo/train_lowbit.py) run in the integer IR.

For each configuration, on the 1000 bundled Fashion-MNIST test images: the QONNX export (compiled
by ``squeeze compile``) and the opset-21 QDQ export (``compiler.compile``) predict the same classes
(they import into the same integer program, integer from the input quantizer to the logits), the
QDQ export predicts what ONNX Runtime does with it, and the accuracy is the torch fake-quant
accuracy the training script recorded, within a point. ``squeeze inspect`` shows the bits.
"""
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm_ffi
from quant_utils import integer_ops

import compiler
from compiler.cli import main
from compiler.frontend import import_onnx
from compiler.pipeline import PassSpec, Recipe, run_passes
from compiler.program import Program
from compiler.runtime import Module
from compiler.zoo import bundled_slice

DATA = Path(compiler.__file__).parent / "zoo" / "data"
CONFIGS = {"w1a1": (1, 1), "w2a8": (2, 8), "w2a2": (2, 2), "w4a4": (4, 4)}  # bits in the residual blocks
RECORDED = json.loads((DATA / "fmnist_resnet8_lowbit.json").read_text())


def _path(cfg: str, fmt: str) -> Path:
    return DATA / f"fmnist_resnet8_{cfg}.{fmt}.onnx"


def _integer(cfg: str, fmt: str) -> Program:
    return run_passes(import_onnx(onnx.load(_path(cfg, fmt)), {"input": (1, 1, 28, 28)}),
                      Recipe([PassSpec("qdq_to_integer")]) + Recipe.cleanups())


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    data = bundled_slice()
    return data["test_x"], data["test_y"]


def _classes(module: Module, x: np.ndarray) -> np.ndarray:
    return module.run({"input": x})["output"].argmax(1)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_lowbit_exports_agree_with_each_other_onnxruntime_and_torch(cfg, images, tmp_path, capsys):
    qonnx, qdq = (_integer(cfg, fmt).mod for fmt in ("qonnx", "qdq"))
    assert tvm_ffi.structural_equal(qonnx["main"], qdq["main"])
    assert integer_ops(qdq) == (10, 0)
    assert qdq["main"].script().count("R.dequantize(") == 1  # the logits': adds and pooling are integer too

    x, y = images
    got = _classes(Module(compiler.compile(_path(cfg, "qdq"), target="x86", input_shapes={"input": x.shape})), x)
    shape = "x".join(map(str, x.shape))
    assert main(["compile", str(_path(cfg, "qonnx")), "--target", "x86", "--input-shape", f"input:{shape}",
                 "-o", str(tmp_path / "q.tar")]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(_classes(compiler.load(tmp_path / "q.tar"), x), got)
    sess = ort.InferenceSession(str(_path(cfg, "qdq")), providers=["CPUExecutionProvider"])
    assert np.mean(sess.run(None, {"input": x})[0].argmax(1) != got) <= 0.005
    assert abs(np.mean(got == y) - RECORDED[cfg]["torch_fake_quant_accuracy_first_1000"]) <= 0.01

    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "q.tar"), "--json", str(tmp_path / "q.json")]) == 0
    w, a = CONFIGS[cfg]
    assert f" w{w}a{a} " in capsys.readouterr().out
    rows = [r for r in json.loads((tmp_path / "q.json").read_text())["layers"] if r["op"] in ("conv2d", "matmul")]
    bits = [re.fullmatch(r"w(\d)a(\d)", r["bits"]).groups() for r in rows]  # stem, 8 in the blocks, classifier
    assert len(bits) == 10 and bits[0][1] == bits[-1][1] == "8"
    assert all(int(wb) <= w and int(ab) == a for wb, ab in bits[1:-1]), bits  # weights: the bits their codes need
