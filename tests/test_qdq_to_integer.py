"""QDQ models (ONNX Runtime's quantize_static) import as integer compute and track ORT's integers."""
import numpy as np
import onnxruntime as ort
from quant_utils import integer_ops, needs_exact_ort_int8, ort_quantize_static, runner

from compiler import zoo
from compiler.frontend import import_onnx
from compiler.pipeline import PassSpec, Recipe, run_passes


def _import_qdq(path, shape):
    return run_passes(import_onnx(path, {"input": shape}), Recipe([PassSpec("qdq_to_integer")]) + Recipe.cleanups())


def _output_scale(path) -> float:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = producer[model.graph.output[0].name]
    return float(inits[node.input[1]])  # the final DequantizeLinear's scale


@needs_exact_ort_int8
def test_fmnist_qdq_is_bit_exact_with_onnxruntime(tmp_path):
    data = zoo.bundled_slice()
    qdq = tmp_path / "qdq.onnx"
    ort_quantize_static(zoo.model_path("fmnist-resnet8"), qdq, data["calib"][:64])
    program = _import_qdq(qdq, (1, 1, 28, 28))
    assert integer_ops(program.mod) == (10, 0)
    run, sess = runner(program), ort.InferenceSession(str(qdq))
    for i in range(100):
        x = data["test_x"][i:i + 1]
        np.testing.assert_array_equal(run(x), sess.run(None, {"input": x})[0])


@needs_exact_ort_int8
def test_resnet18_qdq_within_one_step(tmp_path):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre, qdq = tmp_path / "pre.onnx", tmp_path / "qdq.onnx"
    quant_pre_process(str(zoo.model_path("resnet18")), str(pre), skip_symbolic_shape=True)
    rng = np.random.default_rng(0)
    ort_quantize_static(pre, qdq, rng.standard_normal((8, 3, 224, 224)).astype(np.float32))
    program = _import_qdq(qdq, (1, 3, 224, 224))
    assert integer_ops(program.mod) == (21, 0)
    run, sess = runner(program), ort.InferenceSession(str(qdq))
    step = _output_scale(qdq)
    diffs = []
    for _ in range(4):
        x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
        diffs.append(np.abs(run(x) - sess.run(None, {"input": x})[0]).ravel() / step)
    steps = np.concatenate(diffs)
    assert np.mean(steps <= 1.0 + 1e-3) >= 0.999, np.quantile(steps, [0.5, 0.99, 1.0])


def test_qdq_to_integer_keeps_every_function(tmp_path):
    from tvm import relax

    data = zoo.bundled_slice()
    qdq = tmp_path / "qdq.onnx"
    ort_quantize_static(zoo.model_path("fmnist-resnet8"), qdq, data["calib"][:16])
    mod = import_onnx(qdq, {"input": (1, 1, 28, 28)}).bind_params().mod
    x = relax.Var("x", relax.TensorType((2,), "float32"))
    bb = relax.BlockBuilder(mod)
    with bb.function("extra", [x]):
        bb.emit_func_output(bb.emit(relax.op.add(x, x)))
    from passes import make_pass

    out = make_pass("qdq_to_integer")(bb.get())
    assert "extra" in [gv.name_hint for gv in out.get_global_vars()]
    assert integer_ops(out)[0] == 10
