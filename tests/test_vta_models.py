"""Whole models on vta-sim (VTA layers simulated from their binary streams) bit-identical to the
same shift-only integer model (int8_pow2) compiled for x86."""
import numpy as np
import pytest

import compiler
from compiler import zoo
from targets.vta import runtime


def _compile_both(model, calib, tmp_path):
    quant = compiler.QuantConfig("int8_pow2", calibration=calib)
    loaded = {}
    for target in ("vta-sim", "x86"):
        path = tmp_path / f"{target}.tar"
        compiler.compile(model, target=target, quantize=quant).save(path)
        loaded[target] = compiler.load(path)
    return loaded["vta-sim"], loaded["x86"]


def _assert_identical(vta, cpu, images, min_vta_layers):
    runtime.RUNS.clear()
    for x in images:
        a, b = vta.run({"input": x[None]}), cpu.run({"input": x[None]})
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert len(runtime.RUNS) >= min_vta_layers * len(images)


@pytest.mark.slow
def test_fmnist_resnet8_bit_identical(tmp_path):
    data = zoo.bundled_slice()
    vta, cpu = _compile_both(zoo.model_path("fmnist-resnet8"), {"input": data["calib"][:64]}, tmp_path)
    _assert_identical(vta, cpu, data["test_x"][:32], min_vta_layers=8)


@pytest.mark.slow
def test_resnet18_bit_identical(tmp_path):
    try:
        model = zoo.model_path("resnet18")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    rng = np.random.default_rng(0)
    calib = {"input": rng.standard_normal((4, 3, 224, 224)).astype(np.float32)}
    vta, cpu = _compile_both(model, calib, tmp_path)
    _assert_identical(vta, cpu, rng.standard_normal((2, 3, 224, 224)).astype(np.float32), min_vta_layers=19)
