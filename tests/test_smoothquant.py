"""SmoothQuant (passes.quantize.smoothquant): function kept, outliers moved into the weights."""
import numpy as np
import pytest
import onnx
from graphs import GraphBuilder
from onnx import numpy_helper
from quant_utils import runner

import compiler
from compiler.calibration import smoothed
from compiler.frontend import import_onnx
from compiler.ir import bindings, op_name
from compiler.pipeline import Recipe, run_passes
from passes.quantize.smoothquant import smoothable, smoothing_scales

SHAPE = {"input": (1, 8, 16)}


def _transformer_block(residual: bool = True) -> onnx.ModelProto:
    """LayerNorm (a few huge gamma channels: activation outliers) → two matmuls and a residual;
    without ``residual``, one matmul whose output is the model's (kept exact, no output codes)."""
    g = GraphBuilder(seed=4)
    gamma = np.ones(16, np.float32)
    gamma[[3, 11]] = 40.0
    g.inits.append(numpy_helper.from_array(gamma, "gamma"))
    g.inits.append(numpy_helper.from_array(np.zeros(16, np.float32), "beta"))
    ln = g.op("LayerNormalization", ["input", "gamma", "beta"], axis=-1)
    a = g.op("Add", [g.op("MatMul", [ln, g.weight((16, 16))]), g.weight((16,))])
    b = g.op("MatMul", [ln, g.weight((16, 16))])
    out = g.op("Add", [g.op("Add", [a, b]), ln]) if residual else a
    return g.model({"input": SHAPE["input"]}, out, SHAPE["input"], opset=17)


def _program(residual: bool = True):
    return run_passes(import_onnx(_transformer_block(residual), SHAPE), Recipe.cleanups())


def _data(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 8, 16)).astype(np.float32)


def test_smoothable_finds_the_layer_norm_matmuls():
    readers = smoothable(_program().mod["main"])
    assert [len(v) for v in readers.values()] == [2]


def test_scales_balance_activation_and_weight_ranges():
    act = np.array([1.0, 100.0, 0.0])
    w = [np.array([[1.0, 2.0], [1.0, 1.0], [3.0, 1.0]]), np.array([[4.0], [1.0], [1.0]])]
    s = smoothing_scales(act, w, 0.5)
    np.testing.assert_allclose(s, [np.sqrt(1 / 4), np.sqrt(100 / 1), 1.0], rtol=1e-6)
    # after smoothing both sides have the same range per channel: sqrt(max|x| · max|W|)
    np.testing.assert_allclose((act / s)[:2], np.array([4.0, 1.0]) * s[:2], rtol=1e-6)


def test_function_unchanged_within_float_tolerance():
    program = _program()
    mod = smoothed(program.mod, {"input": _data(8, 0)}, 0.5, progress=False)
    multiplies = [b for b in bindings(mod["main"]) if op_name(b.value) == "relax.multiply"]
    assert len(multiplies) == 1  # one division for both matmuls
    before, after = runner(program), runner(type(program)(mod, program.params, program.inputs, program.outputs))
    for x in _data(4, 1):
        want, got = before(x[None]), after(x[None])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.slow  # a whole compile and calibration: 40-57 s on a loaded 2-core machine
def test_smoothquant_lowers_int8_error():
    calib, test = _data(16, 2), _data(8, 3)
    fp32 = runner(_program(residual=False))

    def error(**options):
        config = compiler.QuantConfig("int8", calibration={"input": calib}, **options)
        run = runner(run_passes(import_onnx(_transformer_block(residual=False), SHAPE),
                                Recipe.cleanups() + config.recipe(progress=False)))
        return sum(float(np.sum((run(x[None]) - fp32(x[None])) ** 2)) for x in test)

    assert error(smoothquant=0.5, bias_correction=False) < 0.8 * error(bias_correction=False)
