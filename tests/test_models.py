"""Whole models compiled for x86 match ONNX Runtime FP32 (error ≤ 1e-4 of the output scale)."""
import numpy as np
import onnx
import pytest
from graphs import assert_close_to_scale, run_ort

import compiler
from compiler import zoo


# MobileNetV2 (31 s) repeats EfficientNet-Lite0's depthwise/inverted-residual shapes: slow only
@pytest.mark.parametrize("name", ["fmnist-resnet8", "resnet18", pytest.param("mobilenetv2", marks=pytest.mark.slow),
                                  "efficientnet-lite0", "transformer-block"])
def test_model_matches_onnxruntime(name, tmp_path):
    path = zoo.model_path(name)
    shape = zoo.INPUT_SHAPES[name]
    module = compiler.load(compiler.compile(path, "x86", input_shapes={"input": shape}).save(tmp_path / "m.tar"))
    if name == "fmnist-resnet8":
        x = zoo.bundled_slice()["test_x"][:1]
    else:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = module.run({"input": x})
    ref = run_ort(onnx.load(path), {"input": x})
    assert len(out) == len(ref)
    for actual, expected in zip(out.values(), ref):
        assert_close_to_scale(actual, expected)
