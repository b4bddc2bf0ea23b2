"""LSTM/GRU unrolled into primitive ops, and If with a constant condition inlined, against ONNX Runtime."""
import numpy as np
import onnx
import pytest
from graphs import assert_close_to_scale, run_ort
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.errors import SqueezeError
from compiler.fold_shapes import fold_shapes
from compiler.frontend import import_onnx
from compiler.recurrent import decompose_recurrent
from compiler.runtime import Module

SEQ, BATCH, INPUT, HIDDEN = 5, 2, 3, 4


def _rnn(kind: str, direction: str = "forward", layout: int = 0, initial: bool = True, peephole: bool = False,
         opset: int = 14, **attrs) -> onnx.ModelProto:
    """One LSTM/GRU node: input ``x``, initial ``h0`` a graph input, ``c0`` a weight; all outputs."""
    rng = np.random.default_rng(0)
    dirs, gates = 1 + (direction == "bidirectional"), 4 if kind == "LSTM" else 3
    state = [BATCH, dirs, HIDDEN] if layout else [dirs, BATCH, HIDDEN]
    arrays = {"W": (dirs, gates * HIDDEN, INPUT), "R": (dirs, gates * HIDDEN, HIDDEN), "B": (dirs, 2 * gates * HIDDEN)}
    if kind == "LSTM" and initial:
        arrays["c0"] = tuple(state)
    if peephole:
        arrays["P"] = (dirs, 3 * HIDDEN)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in arrays.items()]
    names = ["x", "W", "R", "B", "", "h0" if initial else "", "c0" if kind == "LSTM" and initial else "",
             "P" if peephole else ""]
    while not names[-1]:
        names.pop()
    outputs = ["y", "y_h", "y_c"][:3 if kind == "LSTM" else 2]
    node = helper.make_node(kind, names, outputs, name="rnn", hidden_size=HIDDEN, direction=direction,
                            **({"layout": layout} if layout else {}), **attrs)
    x_shape = [BATCH, SEQ, INPUT] if layout else [SEQ, BATCH, INPUT]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    if initial:
        ins.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, state))
    graph = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                 for o in outputs], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}


def _check_unrolled(model: onnx.ModelProto, reference: onnx.ModelProto | None = None) -> None:
    x = model.graph.input[0]
    shapes = {x.name: tuple(d.dim_value for d in x.type.tensor_type.shape.dim)}
    unrolled = decompose_recurrent(onnx.ModelProto.FromString(model.SerializeToString()), shapes)
    assert not {"LSTM", "GRU"} & {n.op_type for n in unrolled.graph.node}
    feeds = _feeds(model)
    for got, want in zip(run_ort(unrolled, feeds), run_ort(reference or model, feeds)):
        assert got.shape == want.shape
        assert_close_to_scale(got, want)


def _layout0(model: onnx.ModelProto) -> onnx.ModelProto:
    """The layout-1 ``model`` as ONNX Runtime runs it (it implements layout 0 only): transposes around."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    node = out.graph.node[0]
    [a.CopyFrom(helper.make_attribute("layout", 0)) for a in node.attribute if a.name == "layout"]
    inputs, outputs = list(node.input), list(node.output)
    pre = [helper.make_node("Transpose", ["x"], ["x0"], perm=[1, 0, 2])]
    node.input[0] = "x0"
    if len(inputs) > 5 and inputs[5]:
        pre.append(helper.make_node("Transpose", ["h0"], ["h00"], perm=[1, 0, 2]))
        node.input[5] = "h00"
    if len(inputs) > 6 and inputs[6]:
        c0 = numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == "c0"))
        out.graph.initializer.append(numpy_helper.from_array(c0.transpose(1, 0, 2).copy(), "c00"))
        node.input[6] = "c00"
    node.output[:] = [o + "0" for o in outputs]
    post = [helper.make_node("Transpose", [o + "0"], [o], perm=[2, 0, 1, 3] if o == "y" else [1, 0, 2])
            for o in outputs]
    nodes = pre + [node] + post
    out.graph.ClearField("node")
    out.graph.node.extend(nodes)
    return out


@pytest.mark.parametrize("direction,layout,initial,peephole", [
    ("forward", 0, False, False), ("reverse", 0, True, False), ("bidirectional", 0, True, True),
    ("bidirectional", 1, True, False), ("forward", 1, False, True)])
def test_lstm_matches_ort(direction, layout, initial, peephole):
    model = _rnn("LSTM", direction, layout, initial, peephole)
    _check_unrolled(model, _layout0(model) if layout else None)


@pytest.mark.parametrize("direction,layout,initial,lbr", [
    ("forward", 0, False, 0), ("forward", 0, True, 1), ("reverse", 1, True, 0), ("bidirectional", 0, True, 1),
    ("bidirectional", 1, False, 0), ("bidirectional", 0, False, 1)])
def test_gru_matches_ort(direction, layout, initial, lbr):
    model = _rnn("GRU", direction, layout, initial, linear_before_reset=lbr)
    _check_unrolled(model, _layout0(model) if layout else None)


def test_opset_12_split_and_projection_is_one_matmul():
    model = _rnn("LSTM", "bidirectional", opset=12)
    _check_unrolled(model)
    unrolled = decompose_recurrent(model, {"x": (SEQ, BATCH, INPUT)})
    matmuls = [n for n in unrolled.graph.node if n.op_type == "MatMul"]
    assert matmuls[0].input[0] == "x"  # X·W for every step and both directions at once
    assert len(matmuls) == 1 + 2 * SEQ


def test_compiled_lstm_then_gru_match_ort():
    lstm, gru = _rnn("LSTM", "bidirectional", initial=False), _rnn("GRU", "reverse", linear_before_reset=1)
    # [seq, 2, batch, hidden] → [seq, batch, 2·hidden] → GRU with input 2·hidden
    g = lstm.graph
    g.node.append(helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1, 3]))
    g.initializer.append(numpy_helper.from_array(np.array([SEQ, BATCH, 2 * HIDDEN], np.int64), "shape"))
    g.node.append(helper.make_node("Reshape", ["yt", "shape"], ["y2"]))
    rng = np.random.default_rng(2)
    for t in gru.graph.initializer:
        if t.name == "W":
            t.CopyFrom(numpy_helper.from_array(rng.standard_normal((1, 3 * HIDDEN, 2 * HIDDEN)).astype(np.float32), "gW"))
        else:
            t.name = "g" + t.name
        g.initializer.append(t)
    g.node.append(helper.make_node("GRU", ["y2", "gW", "gR", "gB", "", "h0"], ["gy", "gy_h"], name="gru",
                                   hidden_size=HIDDEN, direction="reverse", linear_before_reset=1))
    g.input.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, BATCH, HIDDEN]))
    g.ClearField("output")
    g.output.extend([helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("gy", "y_c")])
    lstm = onnx.shape_inference.infer_shapes(lstm)
    feeds = _feeds(lstm)
    got = Module(compiler.compile(lstm, "llvm")).run(feeds)
    for name, want in zip(("gy", "y_c"), run_ort(lstm, feeds)):
        assert_close_to_scale(got[name], want)


def _if_model(condition_from_input: bool = False) -> onnx.ModelProto:
    """``y = Relu(x.squeeze(0)) if x.dim() == 2 else -x.squeeze(0)`` as PyTorch exports it, with
    a nested If (on the rank again) in the then branch."""
    def branch(name: str, nodes: list, out: str) -> onnx.GraphProto:
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [6])])

    axes = helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([0], np.int64)))
    inner = helper.make_node("If", ["is1"], ["out"], name="inner",
                             then_branch=branch("inner_then", [helper.make_node("Relu", ["sq"], ["r"])], "r"),
                             else_branch=branch("inner_else", [helper.make_node("Identity", ["sq"], ["i"])], "i"))
    then = branch("then", [axes, helper.make_node("Squeeze", ["x", "axes"], ["sq"]),
                           helper.make_node("Shape", ["sq"], ["s"]), helper.make_node("Size", ["s"], ["n"]),
                           helper.make_node("Equal", ["n", "one"], ["is1"]), inner], "out")
    other = branch("else", [axes, helper.make_node("Squeeze", ["x", "axes"], ["sq"]),
                            helper.make_node("Neg", ["sq"], ["neg"])], "neg")
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Size", ["shape"], ["rank"]),
             helper.make_node("Equal", ["flag" if condition_from_input else "rank", "two"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], name="outer", then_branch=then, else_branch=other)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])]
    if condition_from_input:
        inputs.append(helper.make_tensor_value_info("flag", TensorProto.INT64, []))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
                              [numpy_helper.from_array(np.array(2, np.int64), "two"),
                               numpy_helper.from_array(np.array(1, np.int64), "one")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_constant_if_is_inlined_nested_too():
    model = _if_model()
    folded = fold_shapes(model, {"x": (1, 6)})
    assert "If" not in {n.op_type for n in folded.graph.node}
    x = {"x": np.linspace(-1, 1, 6, dtype=np.float32)[None]}
    np.testing.assert_array_equal(run_ort(folded, x)[0], run_ort(model, x)[0])
    assert import_onnx(model).outputs[0].shape == (6,)


def test_run_time_if_is_one_line_naming_the_input():
    with pytest.raises(SqueezeError, match=r"If 'outer': its condition is computed at run time .*'flag'.*re-export"):
        import_onnx(_if_model(condition_from_input=True))


def test_unsupported_op_inside_a_branch_is_listed():
    model = _if_model()
    branches = {a.name: a.g for a in model.graph.node[-1].attribute}
    inner = {a.name: a.g for a in branches["then_branch"].node[-1].attribute}
    inner["then_branch"].node[0].op_type = "Celu"  # the nested If's Relu
    with pytest.raises(SqueezeError, match=r"unsupported ONNX ops: Celu"):
        import_onnx(model)


@pytest.mark.parametrize("kind,attrs,message", [
    ("LSTM", {"clip": 3.0}, r"LSTM 'rnn': attribute 'clip' is not supported"),
    ("GRU", {"activations": ["Relu", "Tanh"]}, r"GRU 'rnn': activations \['Relu', 'Tanh'\] are not supported"),
    ("LSTM", {"input_forget": 1}, r"input_forget=1"),
])
def test_unsupported_attributes_are_one_line(kind, attrs, message):
    with pytest.raises(SqueezeError, match=message):
        import_onnx(_rnn(kind, **attrs))


def test_default_activations_spelled_out_and_full_sequence_lens_are_accepted():
    model = _rnn("LSTM", "bidirectional", activations=["Sigmoid", "Tanh", "Tanh"] * 2)
    model.graph.initializer.append(numpy_helper.from_array(np.full(BATCH, SEQ, np.int32), "lens"))
    model.graph.node[0].input[4] = "lens"
    _check_unrolled(model)
    model.graph.initializer[-1].CopyFrom(numpy_helper.from_array(np.array([SEQ, 2], np.int32), "lens"))
    with pytest.raises(SqueezeError, match=r"LSTM 'rnn': sequence_lens 'lens' is not the full length 5"):
        import_onnx(model)


def test_stateful_gru_with_a_scalar_input_compiles_at_int8():
    """Like silero/akiki VAD: a state input and output, and a scalar int64 input (``sr``) whose
    float cast is observed by calibration; calibration arrays carry a leading sample axis."""
    model = _rnn("GRU", linear_before_reset=1)
    g = model.graph
    g.input.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
    g.initializer.append(numpy_helper.from_array(np.array(0, np.int64), "zero"))
    g.node.extend([helper.make_node("Mul", ["sr", "zero"], ["sr0"]), helper.make_node("Cast", ["sr0"], ["srf"], to=1),
                   helper.make_node("Add", ["y_h", "srf"], ["state_out"])])
    g.ClearField("output")
    g.output.extend([helper.make_tensor_value_info("y", TensorProto.FLOAT, [SEQ, 1, BATCH, HIDDEN]),
                     helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, BATCH, HIDDEN])])
    rng = np.random.default_rng(3)
    calib = {"x": rng.standard_normal((2 * SEQ, BATCH, INPUT)).astype(np.float32),
             "h0": rng.standard_normal((2, BATCH, HIDDEN)).astype(np.float32), "sr": np.array([16000, 8000])}
    art = compiler.compile(model, "llvm", quantize=compiler.QuantConfig("int8", calibration=calib))
    feeds = {**_feeds(model), "sr": np.array(16000, np.int64)}
    got = Module(art).run(feeds)
    assert got["state_out"].shape == (1, BATCH, HIDDEN) and np.isfinite(got["y"]).all()
