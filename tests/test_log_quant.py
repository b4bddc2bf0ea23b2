"""Power-of-two quantization: log-quantized weights (codes 0, ±2^k) and shift-only requantization."""
import json

import numpy as np
import pytest
import tvm
from quant_utils import runner, top1
from test_requantize import _compile_requant
from tvm import relax

import compiler
from compiler import zoo
from compiler.frontend import import_onnx
from compiler.pipeline import Recipe, run_passes
from passes.quantize.requantize import Requant, requantize, requantize_reference
from passes.quantize.schemes import parse_scheme


def test_log_codes_are_the_nearest_powers_of_two_in_the_log_domain():
    spec = parse_scheme("int4_log").weights
    assert (spec.qmin, spec.qmax) == (-64, 64)
    v = np.random.default_rng(0).standard_normal(2000) * 20
    codes = spec.quantize(v, 1.0, 0)
    magnitudes = np.array([0, *(2.0 ** np.arange(7))])
    assert set(np.abs(codes)) <= set(magnitudes)
    big = np.abs(v) >= 0.5  # below half the smallest power: zero
    want = magnitudes[1:][np.argmin(np.abs(np.log2(np.abs(v[big]))[:, None] - np.arange(7)[None]), axis=1)]
    np.testing.assert_array_equal(np.abs(codes[big]), want)
    assert np.all(codes[~big] == 0) and np.all(np.sign(codes[big]) == np.sign(v[big]))


@pytest.mark.parametrize("bad", ["w8_sym_per_channel_log__a8_asym_per_tensor",
                                 "w4_sym_per_channel__a4_asym_per_tensor_log"])
def test_log_codes_only_for_2_to_4_bit_weights(bad):
    with pytest.raises(compiler.SqueezeError, match="unknown quantization scheme"):
        parse_scheme(bad)


def _ops(expr) -> set[str]:
    """The ops of a nested Relax expression."""
    if not isinstance(expr, relax.Call):
        return set()
    return {expr.op.name}.union(*(_ops(a) for a in expr.args))


@pytest.mark.parametrize("exponents", [[-3, -5, -1, -7], [-4, 0, 2, -2]], ids=["right-shifts", "mixed-left-right"])
def test_power_of_two_multipliers_requantize_by_shifts_alone(exponents):
    mult = 2.0 ** np.array(exponents * 2, dtype=np.float64)
    rq = Requant(mult, zero=-3, lo=-128, hi=127, out_dtype="int8", integer_only=True)
    acc = relax.Var("acc", relax.TensorType((2, 8, 3, 3), "int32"))
    ops = _ops(requantize(acc, rq, 4, 1))
    assert "relax.multiply" not in ops and "relax.right_shift" in ops, ops
    values = np.random.default_rng(1).integers(-2**14, 2**14, (2, 8, 3, 3)).astype(np.int32)
    values.reshape(-1)[:16] = 2 ** np.arange(16) * 3 // 2  # exact halves after each shift: the rounding rule shows
    np.testing.assert_array_equal(_compile_requant((2, 8, 3, 3), rq, 1)(values), requantize_reference(values, rq, 1))


@pytest.fixture(scope="module")
def fmnist():
    data = zoo.bundled_slice()
    return data, import_onnx(zoo.model_path("fmnist-resnet8"), {"input": (1, 1, 28, 28)})


@pytest.mark.parametrize("scheme", ["int4_log", "int4_log_shift"])
def test_log_weights_keep_fashion_mnist_accuracy(scheme, fmnist):
    """Every layer's weight codes are 0 or ±2^k and the model still classifies: within 10 points of
    FP32 (bench/quant.py measures 83.7 % against FP32's 91.1 % on the 10000 test images, int4 89.7 %)."""
    data, program = fmnist
    config = compiler.QuantConfig(scheme, calibration={"input": data["calib"][:64]})
    quantized = run_passes(program, Recipe.cleanups() + config.recipe(progress=False))
    layers = json.loads(str(quantized.mod["main"].attrs["squeeze.quantized"]))["layers"]
    assert all("_log" in r["mode"] for r in layers)
    consts = [b.value.args[1].value.numpy() for block in quantized.mod["main"].body.blocks for b in block.bindings
              if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.nn.conv2d"]
    for codes in consts:
        magnitudes = np.abs(codes.astype(np.int64))
        assert np.all((magnitudes == 0) | ((magnitudes & (magnitudes - 1)) == 0))
    images, labels = data["test_x"], data["test_y"]
    x = zoo.normalize(images).reshape(-1, 1, 28, 28)
    fp32 = top1(runner(program), x, labels)
    assert top1(runner(quantized), x, labels) >= fp32 - 0.10
