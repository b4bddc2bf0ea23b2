"""Post-training quantization end to end on the bundled Fashion-MNIST ResNet-8."""
import json

import numpy as np
import pytest
from quant_utils import integer_ops, ort_quantize_static, runner, top1

import compiler
from compiler import zoo
from compiler.errors import SqueezeError
from compiler.frontend import import_onnx
from compiler.pipeline import Recipe, run_passes

SHAPE = {"input": (1, 1, 28, 28)}


@pytest.fixture(scope="module")
def data():
    return zoo.bundled_slice()


def _quantized(data, **options):
    config = compiler.QuantConfig(calibration={"input": data["calib"][:128]}, **options)
    program = import_onnx(zoo.model_path("fmnist-resnet8"), SHAPE)
    return run_passes(program, Recipe.cleanups() + config.recipe(progress=False))


def test_ir_computes_in_integers(data):
    program = _quantized(data)
    ints, floats = integer_ops(program.mod)
    assert (ints, floats) == (10, 0)
    text = program.mod["main"].script()
    assert 'R.nn.conv2d(' in text and 'dtype="uint8"' in text and 'R.quantize(' in text
    layers = json.loads(str(program.mod["main"].attrs["squeeze.quantized"]))["layers"]
    assert all(r["mode"] == "w8_sym_per_channel__a8_asym_per_tensor" for r in layers)


@pytest.fixture(scope="module")
def fp32_and_ort(data, tmp_path_factory):
    images, labels = zoo.fashion_mnist("test")
    path = zoo.model_path("fmnist-resnet8")
    fp32 = runner(run_passes(import_onnx(path, SHAPE), Recipe.cleanups()))
    qdq = tmp_path_factory.mktemp("ort") / "qdq.onnx"
    ort_quantize_static(path, qdq, data["calib"][:128], "minmax")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(qdq))
    ort_int8 = top1(lambda x: sess.run(None, {"input": x})[0], images, labels)
    return images, labels, top1(fp32, images, labels), ort_int8


def test_fmnist_int8_accuracy(data, fp32_and_ort):
    images, labels, fp32_acc, ort_acc = fp32_and_ort
    int8_acc = top1(runner(_quantized(data, observer="minmax")), images, labels)
    assert int8_acc >= fp32_acc - 0.003, (int8_acc, fp32_acc)
    assert int8_acc >= ort_acc, (int8_acc, ort_acc)


@pytest.mark.parametrize("scheme", ["int8_integer_only", "int8_pow2", "int8_per_tensor", "int8_sym"])
def test_schemes_keep_accuracy(data, scheme):
    x, y = data["test_x"][:300], data["test_y"][:300]
    assert top1(runner(_quantized(data, scheme=scheme)), x, y) >= 0.88


def test_int4_weights_run_in_integers(data):
    program = _quantized(data, scheme="int4")
    assert integer_ops(program.mod) == (10, 0)
    assert top1(runner(program), data["test_x"][:300], data["test_y"][:300]) >= 0.6


def test_skip_lists_keep_layers_float(data):
    program = _quantized(data, skip=["/layers/layers.0/conv1/Conv"], keep_first_last=True)
    assert integer_ops(program.mod) == (7, 3)
    layers = json.loads(str(program.mod["main"].attrs["squeeze.quantized"]))["layers"]
    assert [r["reason"] for r in layers if r["mode"] == "float"] == [
        "first/last layer kept float", "skipped by name", "first/last layer kept float"]


def test_bias_correction_and_equalize_run(data):
    base = runner(_quantized(data))
    corrected = runner(_quantized(data, bias_correction=True, equalize=True))
    x = data["test_x"][:200]
    assert not np.array_equal(base(x[:1]), corrected(x[:1]))
    assert top1(corrected, x, data["test_y"][:200]) >= 0.88


@pytest.mark.parametrize("calibration, match", [
    (None, "needs calibration data"),
    ({"input": np.zeros((0, 1, 28, 28), np.float32)}, "empty"),
    ({"input": np.full((2, 1, 28, 28), np.inf, np.float32)}, "NaN or Inf"),
    ({"input": np.zeros((2, 3, 28, 28), np.float32)}, "expected \\[N, 1, 28, 28\\]"),
    ({"input": np.zeros((2, 1, 28, 28), np.float16)}, "dtype float16"),
    ("/nonexistent/calib.npz", "calibration data not found"),
])
def test_bad_calibration(calibration, match):
    config = compiler.QuantConfig(calibration=calibration)
    with pytest.raises(SqueezeError, match=match):
        compiler.compile(zoo.model_path("fmnist-resnet8"), input_shapes=SHAPE, quantize=config)


@pytest.mark.parametrize("options, match", [
    ({"scheme": "int7"}, "unknown quantization scheme 'int7'"),
    ({"observer": "kl"}, "unknown observer 'kl'"),
])
def test_bad_scheme_or_observer(data, options, match):
    config = compiler.QuantConfig(calibration={"input": data["calib"][:4]}, **options)
    with pytest.raises(SqueezeError, match=match):
        compiler.compile(zoo.model_path("fmnist-resnet8"), input_shapes=SHAPE, quantize=config)


def _with_extra_function(mod):
    """``mod`` plus a Relax function ``main`` does not call (passes must keep it)."""
    from tvm import relax

    x = relax.Var("x", relax.TensorType((2,), "float32"))
    bb = relax.BlockBuilder(mod)
    with bb.function("extra", [x]):
        bb.emit_func_output(bb.emit(relax.op.add(x, x)))
    return bb.get()


def test_realize_keeps_every_function(data):
    from compiler.calibration import calibrated_ranges
    from passes import make_pass
    from passes.quantize.schemes import parse_scheme

    program = run_passes(import_onnx(zoo.model_path("fmnist-resnet8"), SHAPE), Recipe.cleanups())
    mod = _with_extra_function(program.mod)
    scheme = parse_scheme("int8")
    ranges, _ = calibrated_ranges(mod, scheme, {"input": data["calib"][:8]}, "minmax", progress=False)
    out = make_pass("realize", scheme=scheme, ranges=ranges)(mod)
    assert "extra" in [gv.name_hint for gv in out.get_global_vars()]
    assert integer_ops(out)[0] > 0


def test_realize_without_ranges_is_a_clear_error():
    from passes import make_pass

    with pytest.raises(SqueezeError, match="realize needs calibrated ranges"):
        make_pass("realize", scheme="int8")
