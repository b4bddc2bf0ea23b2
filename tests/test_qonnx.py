"""QONNX (Brevitas/FINN) and opset-21 int4 Q/DQ models import into the integer IR.

The reference runs the QONNX graph as its spec defines it: ``onnx.reference`` with the
``Quant``/``BipolarQuant`` formulas of the QONNX operator docs written out below in numpy
(not the code under test). The int4 QDQ model is checked against ONNX Runtime.
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import squeeze
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from quant_utils import integer_ops, runner

import compiler
from compiler.errors import SqueezeError
from compiler.frontend import import_onnx
from compiler.pipeline import PassSpec, Recipe, run_passes
from compiler.qonnx import lower_quantizers

DOMAIN = "qonnx.custom_op.general"
OUT_SCALE = 0.047  # no multiple of the accumulator's scale: no exact ties, which float noise breaks either way


class Quant(OpRun):
    op_domain = DOMAIN

    def _run(self, x, scale, zeropt, bitwidth, signed=1, narrow=0, rounding_mode="ROUND"):
        b = int(bitwidth)
        lo = -(2 ** (b - 1)) + narrow if signed else 0
        hi = 2 ** (b - 1) - 1 if signed else 2**b - 1 - narrow
        y = np.clip(x / scale + zeropt, lo, hi)
        y = {"ROUND": np.round, "FLOOR": np.floor, "CEIL": np.ceil}[rounding_mode](y)
        return ((y - zeropt) * scale).astype(np.float32),


class BipolarQuant(OpRun):
    op_domain = DOMAIN

    def _run(self, x, scale):
        return (np.where(x >= 0, 1.0, -1.0) * scale).astype(np.float32),


def _init(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _quant(x: str, out: str, scale, zero, bits: int, inits: list, **attrs) -> onnx.NodeProto:
    names = [f"{out}_{k}" for k in ("s", "z", "b")]
    inits += [_init(names[0], scale), _init(names[1], zero), _init(names[2], bits)]
    return helper.make_node("Quant", [x, *names], [out], name=out, domain=DOMAIN, **attrs)


def qonnx_cnn(bipolar_second: bool = True, int32_bias: bool = False) -> onnx.ModelProto:
    """8-bit input quantizer → Conv (4-bit narrow per-channel weights, float bias or Brevitas'
    Int32Bias: a 32-bit quantizer on the accumulator's scale) → Relu → unsigned 4-bit quantizer →
    Conv (binary weights) → signed 8-bit quantizer, as Brevitas exports."""
    rng = np.random.default_rng(0)
    inits = [_init("w1", rng.standard_normal((8, 3, 3, 3)) * 0.3), _init("b1", rng.standard_normal(8) * 0.1),
             _init("w2", rng.standard_normal((4, 8, 3, 3)))]
    w_scale = np.abs(rng.standard_normal((8, 1, 1, 1))) * 0.1 + 0.05
    bias = [_quant("b1", "b1q", w_scale.ravel() / 32, 0, 32, inits, signed=1)] if int32_bias else []
    nodes = [
        _quant("input", "xq", 1 / 32, 0, 8, inits, signed=1),
        _quant("w1", "w1q", w_scale, 0, 4, inits, signed=1, narrow=1), *bias,
        helper.make_node("Conv", ["xq", "w1q", "b1q" if int32_bias else "b1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        _quant("r1", "a1", 0.25, 0, 4, inits, signed=0),
    ]
    if bipolar_second:
        inits.append(_init("w2s", 0.021))
        nodes.append(helper.make_node("BipolarQuant", ["w2", "w2s"], ["w2q"], name="w2q", domain=DOMAIN))
    else:
        nodes.append(_quant("w2", "w2q", 0.05, 0, 2, inits, signed=1, rounding_mode="FLOOR"))
    nodes += [helper.make_node("Conv", ["a1", "w2q"], ["c2"], name="conv2", pads=[1] * 4),
              _quant("c2", "output", OUT_SCALE, 0, 8, inits, signed=1)]
    graph = helper.make_graph(nodes, "qonnx", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1)])


def _ort(model: onnx.ModelProto, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _integer(model, shape):
    return run_passes(import_onnx(model, {"input": shape}), Recipe([PassSpec("qdq_to_integer")]) + Recipe.cleanups())


@pytest.mark.parametrize("bipolar, int32_bias", [(True, False), (False, False), (True, True)],
                         ids=["binary-weights", "2-bit-floor-weights", "int32-bias"])
def test_qonnx_cnn_runs_in_integers_as_its_spec_computes(bipolar, int32_bias):
    """The lowered Q/DQ model computes what the QONNX spec says (run node by node in float by ONNX
    Runtime without graph optimizations, up to float rounding); the integer IR Squeeze realizes from it gives ONNX
    Runtime's integers (its fused QLinearConv) exactly, and is within one output step of the
    spec (integer kernels round the bias to s_x·s_w)."""
    model = qonnx_cnn(bipolar, int32_bias)
    lowered = lower_quantizers(model)
    assert not [n for n in lowered.graph.node if n.domain]
    program = _integer(model, (1, 3, 8, 8))
    assert integer_ops(program.mod) == (2, 0)
    spec, run = ReferenceEvaluator(model, new_ops=[Quant, BipolarQuant]), runner(program)
    as_qdq, sess = _ort(lowered, ort.GraphOptimizationLevel.ORT_DISABLE_ALL), _ort(lowered)
    rng = np.random.default_rng(1)
    for _ in range(8):
        x = {"input": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
        want = spec.run(None, x)[0]
        flips = np.abs(as_qdq.run(None, x)[0] - want) / OUT_SCALE  # float sums in another order: rare flips
        assert flips.max() <= 1 + 1e-4 and np.mean(flips > 0.5) < 0.02
        got = run(x["input"])
        np.testing.assert_array_equal(got, sess.run(None, x)[0])
        assert np.abs(got - want).max() <= OUT_SCALE * (1 + 1e-4)


def test_qonnx_layers_report_their_weight_and_activation_bits(tmp_path):
    path = tmp_path / "qonnx.onnx"
    onnx.save(qonnx_cnn(), path)
    assert squeeze("compile", path, "-o", tmp_path / "q.tar").returncode == 0
    shown = squeeze("inspect", tmp_path / "q.tar")
    assert shown.returncode == 0, shown.stderr
    assert "w4a8" in shown.stdout and "w1a4" in shown.stdout, shown.stdout  # the 4-bit activations it reads


def _int4_qdq() -> onnx.ModelProto:
    """opset 21: int4 per-channel weights, uint4 activations after a Relu, int8 output."""
    rng = np.random.default_rng(2)
    w = rng.integers(-8, 8, (6, 3, 3, 3))
    inits = [helper.make_tensor("w", TensorProto.INT4, w.shape, w.ravel().tolist()),
             _init("ws", np.abs(rng.standard_normal(6)) * 0.05 + 0.02),
             _init("xs", 1 / 32), helper.make_tensor("xz", TensorProto.INT8, [], [0]),
             _init("as", 0.2), helper.make_tensor("az", TensorProto.UINT4, [], [0]),
             _init("os", 0.04), helper.make_tensor("oz", TensorProto.INT8, [], [0]),
             _init("b", rng.standard_normal(6) * 0.1)]
    node = helper.make_node
    nodes = [node("QuantizeLinear", ["input", "xs", "xz"], ["xq"]), node("DequantizeLinear", ["xq", "xs", "xz"], ["x"]),
             node("DequantizeLinear", ["w", "ws"], ["wf"], axis=0),
             node("Conv", ["x", "wf", "b"], ["c"], pads=[1] * 4), node("Relu", ["c"], ["r"]),
             node("QuantizeLinear", ["r", "as", "az"], ["rq"]), node("DequantizeLinear", ["rq", "as", "az"], ["rd"]),
             node("MaxPool", ["rd"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             node("QuantizeLinear", ["p", "os", "oz"], ["pq"]), node("DequantizeLinear", ["pq", "os", "oz"], ["output"])]
    graph = helper.make_graph(nodes, "int4", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 6, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def test_int4_qdq_matches_onnxruntime():
    model = _int4_qdq()
    program = _integer(model, (1, 3, 8, 8))
    assert integer_ops(program.mod) == (1, 0)
    run, sess = runner(program), _ort(model)
    rng = np.random.default_rng(3)
    for _ in range(8):
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        want = sess.run(None, {"input": x})[0]
        assert np.abs(run(x) - want).max() <= 0.04 * (1 + 1e-4)


def _with(model: onnx.ModelProto, name: str, **attrs) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    node = next(n for n in out.graph.node if n.name == name)
    for key, value in attrs.items():
        node.attribute.append(helper.make_attribute(key, value))
    return out


@pytest.mark.parametrize("change, message", [
    (lambda m: _with(m, "a1", rounding_mode="FLOOR"), "Quant 'a1': rounding_mode FLOOR on activations"),
    (lambda m: _with(m, "xq", max_val=1.0), "Quant 'xq': unsupported attribute max_val"),
    (lambda m: _bits(m, "a1_b", 16), r"Quant 'a1': bit width \[16.0\] is not an integer from 1 to 8"),
    (lambda m: _with(_bits(m, "a1_b", 1), "a1", narrow=1),
     "Quant 'a1': signed=0 narrow=1 leaves 1-bit codes one value"),
    (lambda m: _bits(m, "w1q_b", 40), r"Quant 'w1q': bit width \[40.0\] is not an integer from 1 to 32"),
])
def test_unsupported_quantizers_are_one_line_naming_the_node(change, message):
    with pytest.raises(SqueezeError, match=message):
        import_onnx(change(qonnx_cnn()), {"input": (1, 3, 8, 8)})


def _bits(model: onnx.ModelProto, name: str, bits: int) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    tensor = next(t for t in out.graph.initializer if t.name == name)
    tensor.CopyFrom(_init(name, bits))
    return out


class Trunc(OpRun):
    """QONNX ``Trunc`` v1 (5 inputs) and v2 (6 inputs), as the specification's sample computes it."""

    op_domain = DOMAIN

    def _run(self, x, scale, zeropt, in_bits, *rest, rounding_mode="FLOOR", signed=1, narrow=0):
        rounding = {"ROUND": np.round, "FLOOR": np.floor, "CEIL": np.ceil}[rounding_mode]
        y = np.round(x / scale + zeropt)
        if len(rest) == 1:  # v1: out_bits
            return ((rounding(y / 2.0 ** (in_bits - rest[0])) - zeropt) * scale).astype(np.float32),
        out_scale, out_bits = rest
        step = 2.0 ** np.round(np.log2(out_scale / scale))
        b = int(out_bits)
        lo, hi = (-(2 ** (b - 1)) + narrow, 2 ** (b - 1) - 1) if signed else (0, 2**b - 1)
        return ((rounding(np.clip(y / step, lo, hi)) - zeropt / step) * out_scale).astype(np.float32),


def _truncated(version: int, rounding_mode: str) -> onnx.ModelProto:
    """The QONNX CNN's signed 8-bit output truncated to 5 bits, as FINN's average pools do."""
    model = qonnx_cnn()
    inits = [_init("t_in", 8), _init("t_out", 5), _init("t_scale", OUT_SCALE * 8)]
    model.graph.initializer.extend(inits)
    inputs = ["output", "output_s", "output_z", "t_in"] + (["t_out"] if version == 1 else ["t_scale", "t_out"])
    model.graph.node.append(helper.make_node("Trunc", inputs, ["t"], name="trunc0", domain=DOMAIN,
                                             rounding_mode=rounding_mode))
    model.graph.output[0].name = "t"
    return model


@pytest.mark.parametrize("version, mode", [(1, "FLOOR"), (2, "ROUND"), (2, "CEIL")])
def test_trunc_computes_its_spec(version, mode, tmp_path):
    """A truncated output (v1 and v2 Trunc) runs from the CLI and gives what the spec computes
    on the same 8-bit codes: the codes Squeeze's integer layers produce (checked against the
    spec above) truncated exactly."""
    model = _truncated(version, mode)
    assert not [n for n in lower_quantizers(model).graph.node if n.domain]
    spec = ReferenceEvaluator(model, new_ops=[Quant, BipolarQuant, Trunc])
    onnx.save(model, tmp_path / "t.onnx")
    proc = squeeze("compile", tmp_path / "t.onnx", "-o", tmp_path / "t.tar")
    assert proc.returncode == 0, proc.stderr
    art, codes = compiler.load(tmp_path / "t.tar"), runner(_integer(qonnx_cnn(), (1, 3, 8, 8)))
    trunc_only = ReferenceEvaluator(_trunc_of(model), new_ops=[Trunc])
    rng = np.random.default_rng(4)
    for _ in range(4):
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        got = art.run({"input": x})["t"]
        want = trunc_only.run(None, {"output": codes(x)})[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert np.abs(got - spec.run(None, {"input": x})[0]).max() <= 8 * OUT_SCALE + 1e-6  # one 5-bit step


def _trunc_of(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model's Trunc node alone, reading ``output``."""
    node = next(n for n in model.graph.node if n.op_type == "Trunc")
    inits = [t for t in model.graph.initializer if t.name in node.input]
    graph = helper.make_graph([node], "trunc", [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1)])


def test_cli_refuses_a_bad_trunc_in_one_line(tmp_path):
    onnx.save(_truncated(1, "HALF_UP"), tmp_path / "t.onnx")
    proc = squeeze("compile", tmp_path / "t.onnx", "-o", tmp_path / "t.tar")
    assert proc.returncode == 2 and "Trunc 'trunc0': rounding_mode HALF_UP is unknown" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "t.tar").exists()
