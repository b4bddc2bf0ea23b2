"""EfficientNet-Lite0 (real ImageNet weights) quantized to INT8, judged on crops of real photos.

Without labels the float model is the reference: the INT8 top-1 must agree with it at least as
often as ONNX Runtime's static INT8 (QDQ, per-channel, min-max) calibrated on the same images,
and the float top-1 must always be among the INT8 top-5.
"""
from typing import Callable

import numpy as np
import onnxruntime as ort
import pytest
from quant_utils import ort_quantize_static

import compiler
from compiler import zoo
from compiler.zoo.photos import calibration_photos, photos


def _outputs(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    return np.concatenate([run(images[i:i + 1]) for i in range(len(images))])


def _ort(path) -> Callable[[np.ndarray], np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"input": x})[0]


def _agreement(reference: np.ndarray, outputs: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, fraction of reference top-1 inside the top-5)."""
    ref = reference.argmax(axis=1)
    top5 = np.argsort(-outputs, axis=1)[:, :5]
    return float(np.mean(outputs.argmax(axis=1) == ref)), float(np.mean((top5 == ref[:, None]).any(axis=1)))


@pytest.mark.slow  # 50 s; the default suite checks INT8 accuracy on the bundled model and ResNet-18 QDQ
def test_efficientnet_lite0_int8_agrees_with_fp32_on_photos(tmp_path):
    model = zoo.model_path("efficientnet-lite0")
    images, calib = photos(), calibration_photos()
    reference = _outputs(_ort(model), images)

    ort_quantize_static(model, tmp_path / "qdq.onnx", calib, "minmax")
    ort_agree, ort_top5 = _agreement(reference, _outputs(_ort(tmp_path / "qdq.onnx"), images))

    config = compiler.QuantConfig(calibration={"input": calib}, observer="minmax", bias_correction=True)
    module = compiler.load(compiler.compile(model, quantize=config).save(tmp_path / "int8.tar"))
    int8 = _outputs(lambda x: module.run({"input": x})["output"], images)
    agree, top5 = _agreement(reference, int8)

    assert agree >= ort_agree, (agree, ort_agree)
    assert top5 == 1.0, (top5, ort_top5)
