"""``squeeze export --format onnx-qdq`` / ``compiler.export_qdq``: Squeeze's quantization as QDQ ONNX.

The export must run in ONNX Runtime and agree with Squeeze's own compiled INT8 artifact to within
one output quantization step, carry Squeeze's scales and weight codes, keep float what Squeeze keeps
float, and fail with one line (exit 2, nothing written) on bad input.
"""
import tarfile

import numpy as np
import onnx
import pytest
from conftest import squeeze
from quant_utils import needs_exact_ort_int8, ort_qdq_session

import compiler
from compiler import zoo


def _step(model: onnx.ModelProto, output: str = "output") -> float:
    return float({p.key: p.value for p in model.metadata_props}[f"squeeze.output_step.{output}"])


def _run_ort(path, x: np.ndarray) -> np.ndarray:
    sess = ort_qdq_session(path)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _run_squeeze(model, config, x: np.ndarray, tmp_path) -> np.ndarray:
    art = compiler.compile(model, quantize=config)
    module = compiler.load(art.save(tmp_path / "art.tar"))
    return np.concatenate([module.run({"input": x[i:i + 1]})["output"] for i in range(len(x))])


def _agreement(a: np.ndarray, b: np.ndarray, step: float) -> float:
    """Fraction of elements within one output quantization step."""
    return float((np.abs(a - b) <= step * (1 + 1e-6)).mean())


@pytest.fixture(scope="module")
def fmnist():
    data = zoo.bundled_slice()
    return zoo.model_path("fmnist-resnet8"), data["calib"], data["test_x"][:200]


@pytest.fixture(scope="module")
def fmnist_qdq(fmnist, tmp_path_factory):
    """The bundled model exported through the real ``squeeze export`` command."""
    model, calib, _ = fmnist
    tmp = tmp_path_factory.mktemp("qdq")
    np.savez(tmp / "calib.npz", input=calib)
    out = tmp / "q.onnx"
    proc = squeeze("export", model, "--format", "onnx-qdq", "--quantize", "int8", "--calib", tmp / "calib.npz",
                   "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stderr
    return out


def test_fmnist_qdq_is_valid_and_standard(fmnist_qdq):
    model = onnx.load(fmnist_qdq)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 9 and ops.count("Gemm") == 1 and "BatchNormalization" not in ops
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        x, w, b = (producers[i] for i in node.input[:3])
        assert x.op_type == "DequantizeLinear" and inits[x.input[1]].ndim == 0        # per-tensor activations
        assert inits[x.input[2]].dtype == np.uint8
        assert w.op_type == "DequantizeLinear" and inits[w.input[0]].dtype == np.int8  # int8 weights
        assert inits[w.input[1]].shape == (inits[w.input[0]].shape[0],)                  # per output channel
        assert b.op_type == "DequantizeLinear" and inits[b.input[0]].dtype == np.int32  # int32 bias, s_x * s_w
        np.testing.assert_array_equal(inits[b.input[1]], np.float32(inits[x.input[1]]) * inits[w.input[1]])
        assert not inits[b.input[2]].any()
    # a ReLU stays after its conv and the quantization follows it (ONNX Runtime fuses the pattern)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    assert producers[relu.input[0]].op_type == "Conv"
    assert [n.op_type for n in model.graph.node if relu.output[0] in n.input] == ["QuantizeLinear"]


def test_fmnist_qdq_matches_squeeze_int8_in_onnxruntime(fmnist, fmnist_qdq, tmp_path):
    model, calib, x = fmnist
    ours = _run_ort(fmnist_qdq, x)
    theirs = _run_squeeze(model, compiler.QuantConfig("int8", calibration={"input": calib}), x, tmp_path)
    agree = _agreement(ours, theirs, _step(onnx.load(fmnist_qdq)))
    print(f"fmnist-resnet8: {100 * agree:.3f} % of outputs within one quantization step, "
          f"max |diff| {np.abs(ours - theirs).max():.3g}")
    assert agree >= 0.999


def test_fmnist_qdq_carries_squeezes_scales_and_codes(fmnist, fmnist_qdq):
    """The input's scale/zero point and the first conv's int8 codes are those of Squeeze's realized IR."""
    import tvm

    from compiler.frontend import import_onnx
    from compiler.ir import bindings, op_name
    from compiler.pipeline import Recipe, run_passes

    model, calib, _ = fmnist
    config = compiler.QuantConfig("int8", calibration={"input": calib})
    realized = run_passes(import_onnx(model), Recipe.cleanups() + config.recipe(progress=False)).mod["main"]
    quantize = next(b.value for b in bindings(realized) if op_name(b.value) == "relax.quantize")
    conv = next(b.value for b in bindings(realized) if op_name(b.value) == "relax.nn.conv2d")
    assert isinstance(conv.args[1], tvm.ir.expr.Constant) and str(conv.args[1].ty.dtype) == "int8"

    exported = onnx.load(fmnist_qdq)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in exported.graph.initializer}
    q_input = next(n for n in exported.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert inits[q_input.input[1]] == quantize.args[1].value.numpy()
    assert inits[q_input.input[2]] == quantize.args[2].value.numpy()
    first = next(n for n in exported.graph.node if n.op_type == "Conv")
    w_dq = next(n for n in exported.graph.node if first.input[1] in n.output)
    np.testing.assert_array_equal(inits[w_dq.input[0]], conv.args[1].value.numpy())


@pytest.mark.slow
def test_skipped_layers_stay_float(fmnist, tmp_path):
    model, calib, _ = fmnist
    first = "/stem/stem.0/stem.0.0/Conv"
    config = compiler.QuantConfig("int8", calibration={"input": calib[:32]}, skip=[first])
    exported = compiler.export_qdq(model, tmp_path / "q.onnx", config)
    assert onnx.load(tmp_path / "q.onnx") == exported
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in exported.graph.initializer}
    producers = {o: n for n in exported.graph.node for o in n.output}
    conv = next(n for n in exported.graph.node if n.name == first)
    assert conv.input[0] == "input" and inits[conv.input[1]].dtype == np.float32   # float input and weights
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "input" for n in exported.graph.node)
    convs = [n for n in exported.graph.node if n.op_type == "Conv" and n.name != first]
    assert all(producers[n.input[1]].op_type == "DequantizeLinear" for n in convs)


def test_artifact_exports_as_it_was_compiled(fmnist, fmnist_qdq, tmp_path, capsys):
    """``squeeze export art.tar`` replays the artifact's own source, data and options (checked by
    SHA-256): the same QDQ model as exporting the ONNX model with those options."""
    import shutil

    from compiler.cli import main

    model, _, _ = fmnist
    calib = tmp_path / "calib.npz"
    shutil.copy(fmnist_qdq.parent / "calib.npz", calib)
    art, out = tmp_path / "art.tar", tmp_path / "q.onnx"
    assert main(["compile", str(model), "--quantize", "int8", "--calib", str(calib), "-o", str(art)]) == 0
    assert main(["export", str(art), "-o", str(out)]) == 0
    assert onnx.load(out).SerializeToString() == onnx.load(fmnist_qdq).SerializeToString()
    capsys.readouterr()
    moved = tmp_path / "moved.npz"
    calib.rename(moved)
    cases = [([], "calib.npz, which is missing: give its new place with --calib"),
             (["--quantize", "int8"], "drop --quantize"),
             (["--calib", str(fmnist_qdq)], "not the calibration data")]
    for extra, message in cases:
        assert main(["export", str(art), "-o", str(tmp_path / "bad.onnx"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad.onnx").exists()
    assert main(["export", str(art), "-o", str(tmp_path / "q2.onnx"), "--calib", str(moved)]) == 0
    assert onnx.load(tmp_path / "q2.onnx").SerializeToString() == onnx.load(fmnist_qdq).SerializeToString()


def test_int4_weights_are_packed_int4_and_match_squeeze(fmnist, fmnist_qdq, tmp_path):
    model, calib, x = fmnist
    config = compiler.QuantConfig("int4", calibration={"input": calib})
    exported = compiler.export_qdq(model, tmp_path / "q4.onnx", config)
    assert next(o.version for o in exported.opset_import if o.domain in ("", "ai.onnx")) == 21
    int4 = [t for t in exported.graph.initializer if t.data_type == onnx.TensorProto.INT4]
    codes = [onnx.numpy_helper.to_array(t) for t in int4 if t.name.endswith("_quantized")]
    assert len(codes) == 10 and all(np.abs(c.astype(np.int64)).max() <= 8 for c in codes)
    assert (tmp_path / "q4.onnx").stat().st_size < 0.85 * fmnist_qdq.stat().st_size
    ours, theirs = _run_ort(tmp_path / "q4.onnx", x[:50]), _run_squeeze(model, config, x[:50], tmp_path)
    assert _agreement(ours, theirs, _step(exported)) >= 0.999


def _relu6_chain() -> onnx.ModelProto:
    """conv-BN-ReLU6 -> depthwise conv-BN-ReLU6 -> 1x1 conv: what equalization rescales per channel."""
    from graphs import GraphBuilder

    g = GraphBuilder(seed=4)
    six = g.weight((), scale=0.0)
    g.inits[-1] = onnx.numpy_helper.from_array(np.float32(6.0), six)
    zero = g.weight((), scale=0.0)
    relu6 = lambda t: g.op("Clip", [t, zero, six])  # noqa: E731
    x = relu6(g.bn(g.conv("input", 3, 16, bias=False), 16))
    x = relu6(g.bn(g.conv(x, 16, 16, group=16), 16))
    return g.model({"input": (1, 3, 12, 12)}, g.conv(x, 16, 8, k=1), (1, 8, 12, 12))


def test_equalized_relu6_exports_as_relu_then_per_channel_min(tmp_path):
    model = _relu6_chain()
    rng = np.random.default_rng(0)
    calib, x = rng.standard_normal((16, 3, 12, 12)).astype(np.float32), rng.standard_normal((8, 3, 12, 12))
    config = compiler.QuantConfig("int8", calibration={"input": calib}, equalize=True)
    onnx.save(model, tmp_path / "m.onnx")
    exported = compiler.export_qdq(tmp_path / "m.onnx", tmp_path / "q.onnx", config)
    ops = [n.op_type for n in exported.graph.node]
    assert ops.count("Min") == 2 and "Clip" not in ops
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in exported.graph.initializer}
    caps = [inits[n.input[1]] for n in exported.graph.node if n.op_type == "Min"]
    assert all(c.shape == (1, 16, 1, 1) and np.ptp(c) > 0 for c in caps)  # 6 / s, one cap per channel
    art = compiler.compile(tmp_path / "m.onnx", quantize=config)
    module = compiler.load(art.save(tmp_path / "art.tar"))
    theirs = np.concatenate([next(iter(module.run({"input": x[i:i + 1].astype(np.float32)}).values()))
                             for i in range(len(x))])
    ours = _run_ort(tmp_path / "q.onnx", x.astype(np.float32))
    assert _agreement(ours, theirs, _step(exported, exported.graph.output[0].name)) >= 0.999


def test_cli_export_errors(fmnist, fmnist_qdq, tmp_path, capsys):
    from compiler.cli import main

    assert callable(compiler.export_qdq)  # the API name, not shadowed by the driver module
    model, _, _ = fmnist
    calib = fmnist_qdq.parent / "calib.npz"
    art = tmp_path / "art.tar"
    with tarfile.open(art, "w"):
        pass
    out = tmp_path / "q.onnx"
    cases = [
        (["--format", "onnx-qdq"], "needs calibration data"),
        (["--format", "tflite", "--calib", calib], "unknown export format 'tflite'"),
        (["--calib", calib, "--quantize", "w2_sym_per_channel__a8_asym_per_tensor"], "8- or 4-bit weights"),
    ]
    for extra, message in cases:
        assert main(["export", str(model), "-o", str(out), *map(str, extra)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert main(["export", str(fmnist_qdq), "-o", str(out), "--calib", str(calib)]) == 2
    err = capsys.readouterr().err.strip()
    assert "quantized already" in err and len(err.splitlines()) == 1, err
    assert main(["export", str(art), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "art.tar" in err and len(err.splitlines()) == 1, err
    assert main(["export", str(model), "-o", str(tmp_path / "missing" / "q.onnx"), "--calib", str(calib)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art.tar"]   # nothing written, no temporary left


@pytest.mark.slow
@pytest.mark.parametrize("options", [{"skip": ["/layers/layers.1/conv1/Conv"]}, {"keep_first_last": True},
                                     {"bias_correction": True}, {"scheme": "int8_sym"}])
def test_fmnist_qdq_options_match_squeeze(fmnist, tmp_path, options):
    model, calib, x = fmnist
    config = compiler.QuantConfig(**{"scheme": "int8", **options}, calibration={"input": calib})
    exported = compiler.export_qdq(model, tmp_path / "q.onnx", config)
    agree = _agreement(_run_ort(tmp_path / "q.onnx", x), _run_squeeze(model, config, x, tmp_path), _step(exported))
    # a float layer between integer ones re-quantizes a float result: ORT's and TVM's float convs round
    # differently, which can move a code at a rounding boundary (measured 99.15 % with the skip below)
    assert agree >= (0.99 if "skip" in options else 0.999), (options, agree)


@pytest.mark.slow
@needs_exact_ort_int8
def test_resnet18_qdq_matches_squeeze_int8_in_onnxruntime(tmp_path):
    from compiler.zoo.photos import calibration_photos, photos

    try:
        model = zoo.model_path("resnet18")
    except (FileNotFoundError, RuntimeError) as err:
        pytest.skip(str(err))
    images = photos()
    config = compiler.QuantConfig("int8", calibration={"input": calibration_photos()})
    exported = compiler.export_qdq(model, tmp_path / "q.onnx", config)
    assert "BatchNormalization" not in {n.op_type for n in exported.graph.node}
    ours, theirs = _run_ort(tmp_path / "q.onnx", images), _run_squeeze(model, config, images, tmp_path)
    agree = _agreement(ours, theirs, _step(exported))
    print(f"resnet18: {100 * agree:.3f} % of outputs within one quantization step, "
          f"max |diff| {np.abs(ours - theirs).max():.3g}, "
          f"top-1 agreement {(ours.argmax(1) == theirs.argmax(1)).mean():.3f}")
    assert agree >= 0.999
