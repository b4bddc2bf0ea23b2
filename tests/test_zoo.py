"""Model zoo: bundled Fashion-MNIST model and data, and torch-venv exports of the other models."""
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler import zoo

EXPORTED = {  # name → (output shape, ONNX ops the graph must hold)
    "resnet18": ((1, 1000), {"Conv", "BatchNormalization", "MaxPool", "Add", "Gemm"}),
    "mobilenetv2": ((1, 1000), {"Conv", "BatchNormalization", "Clip", "Add", "Gemm"}),
    "efficientnet-lite0": ((1, 1000), {"Conv", "Clip", "Add", "GlobalAveragePool", "Gemm"}),
    "transformer-block": ((1, 16, 64), {"MatMul", "Softmax", "LayerNormalization", "Erf"}),
}
PARAM_COUNTS = {"resnet18": 11_689_512, "mobilenetv2": 3_504_872}  # torchvision's


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export every torch-venv model once into a fresh cache; name → ModelProto."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SQUEEZE_CACHE", str(tmp_path_factory.mktemp("cache")))
        return {name: onnx.load(zoo.model_path(name)) for name in EXPORTED}


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["output"], {"input": x})[0]


def test_bundled_model_accuracy():
    model = onnx.load(zoo.model_path("fmnist-resnet8"))
    onnx.checker.check_model(model, full_check=True)
    x, y = zoo.fashion_mnist("test")
    pred = np.concatenate([run_ort(model, batch).argmax(1) for batch in np.array_split(x, 10)])
    assert (pred == y).mean() >= 0.89


def test_bundled_slice():
    data = zoo.bundled_slice()
    assert data["calib"].shape[1:] == data["test_x"].shape[1:] == (1, 28, 28)
    assert data["calib"].dtype == data["test_x"].dtype == np.float32
    assert data["test_y"].dtype == np.int64 and len(data["test_y"]) == len(data["test_x"])
    x, _ = zoo.fashion_mnist("test")
    np.testing.assert_array_equal(data["test_x"], x[: len(data["test_x"])])
    pred = run_ort(onnx.load(zoo.model_path("fmnist-resnet8")), data["test_x"]).argmax(1)
    assert (pred == data["test_y"]).mean() >= 0.89


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist(split, n):
    x, y = zoo.fashion_mnist(split)
    assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def test_unknown_model():
    with pytest.raises(ValueError, match="resnet18"):
        zoo.model_path("resnet50")


def test_missing_torch_venv(monkeypatch, tmp_path):
    monkeypatch.setenv("SQUEEZE_CACHE", str(tmp_path))
    monkeypatch.setenv("SQUEEZE_TORCH_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(FileNotFoundError, match="make torch"):
        zoo.model_path("resnet18")


@pytest.mark.parametrize("name", EXPORTED)
def test_export(exported, name):
    model = exported[name]
    onnx.checker.check_model(model, full_check=True)
    shape, ops = EXPORTED[name]
    assert ops <= set(Counter(n.op_type for n in model.graph.node))
    assert [i.name for i in model.graph.input] == ["input"]
    x = np.random.default_rng(0).standard_normal(zoo.INPUT_SHAPES[name]).astype(np.float32)
    y = run_ort(model, x)
    assert y.shape == shape and np.isfinite(y).all() and y.std() > 1e-3


@pytest.mark.parametrize("name", PARAM_COUNTS)
def test_param_counts(exported, name):
    params = [i for i in exported[name].graph.initializer if not i.name.endswith(("running_mean", "running_var"))]
    assert sum(int(np.prod(i.dims)) for i in params) == PARAM_COUNTS[name]


def test_efficientnet_folded(exported):
    model = exported["efficientnet-lite0"]
    assert len(model.graph.node) < 100
    assert {op.domain for op in model.opset_import} <= {"", "ai.onnx"}
