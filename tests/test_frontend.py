import numpy as np
import pytest
from graphs import GraphBuilder, small_cnn
from onnx import helper, numpy_helper

from compiler.errors import SqueezeError
from compiler.frontend import import_onnx


def test_import_detaches_params_and_specs():
    program = import_onnx(small_cnn())
    assert [(s.name, s.shape, s.dtype) for s in program.inputs] == [("input", (1, 3, 16, 16), "float32")]
    assert program.outputs[0].shape == (1, 10)
    assert len(program.params) == 13 and all(isinstance(v, np.ndarray) for v in program.params.values())
    assert len(program.mod["main"].params) == 1 + len(program.params)


def test_constant_nodes_become_params():
    g = GraphBuilder()
    w = np.ones((4, 3, 1, 1), np.float32)
    g.nodes.append(helper.make_node("Constant", [], ["cw"], value=numpy_helper.from_array(w)))
    out = g.op("Conv", ["input", "cw"])
    program = import_onnx(g.model({"input": (1, 3, 4, 4)}, out, (1, 4, 4, 4)))
    assert list(program.params) == ["cw"]
    np.testing.assert_array_equal(program.params["cw"], w)


def test_dynamic_batch_defaults_to_one_and_shapes_override():
    assert import_onnx(small_cnn(batch="N")).inputs[0].shape == (1, 3, 16, 16)
    program = import_onnx(small_cnn(batch="N"), {"input": (4, 3, 16, 16)})
    assert program.inputs[0].shape == (4, 3, 16, 16) and program.outputs[0].shape == (4, 10)


def test_dynamic_spatial_dims_need_a_shape():
    g = GraphBuilder()
    out = g.op("Relu", ["input"])
    model = g.model({"input": (1, 3, "H", "W")}, out, (1, 3, "H", "W"))
    with pytest.raises(SqueezeError, match=r"--input-shape input:1x3x1x1"):
        import_onnx(model)
    assert import_onnx(model, {"input": (1, 3, 5, 7)}).outputs[0].shape == (1, 3, 5, 7)


def test_shape_override_must_match_static_dims_but_the_batch():
    with pytest.raises(SqueezeError, match="not 1x4x16x16: .*only the batch"):
        import_onnx(small_cnn(), {"input": (1, 4, 16, 16)})
    assert import_onnx(small_cnn(), {"input": (4, 3, 16, 16)}).outputs[0].shape == (4, 10)  # static batch 1 -> 4
    with pytest.raises(SqueezeError, match="unknown input 'x'"):
        import_onnx(small_cnn(), {"x": (1, 3, 16, 16)})


def test_unsupported_ops_listed_with_node_names():
    g = GraphBuilder()
    a = g.op("Relu", ["input"])
    b = g.op("Celu", [a], name="celu_a")
    c = g.op("LpNormalization", [b], name="norm")
    out = g.op("Celu", [c], name="celu_b")
    graph = helper.make_graph(g.nodes, "g", [helper.make_tensor_value_info("input", 1, [1, 4])],
                              [helper.make_tensor_value_info(out, 1, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(SqueezeError, match=r"unsupported ONNX ops: Celu \(celu_a, celu_b\); LpNormalization \(norm\)"):
        import_onnx(model)


def test_malformed_files(tmp_path):
    with pytest.raises(SqueezeError, match="not found"):
        import_onnx(tmp_path / "missing.onnx")
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n")
    with pytest.raises(SqueezeError, match="(not a readable ONNX model|no ONNX graph)"):
        import_onnx(text)
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(small_cnn().SerializeToString()[:300])
    with pytest.raises(SqueezeError):
        import_onnx(truncated)


def test_folded_expand_shape_keeps_the_output_static():
    """minilm-l3's masked mean pooling: Expand(mask, Shape(hidden)) folds to a constant shape,
    which must reach the importer as a constant (as a parameter the output shape was lost)."""
    g = GraphBuilder()
    out = g.op("Mul", ["input", g.op("Expand", ["mask", g.op("Shape", ["input"])])])
    program = import_onnx(g.model({"input": (1, 4, 3), "mask": (1, 4, 1)}, out, (1, 4, 3)))
    assert program.outputs[0].shape == (1, 4, 3) and not program.params


def test_negative_squeeze_axes_survive_layout_conversion():
    from tvm import relax

    g = GraphBuilder()
    g.inits.append(numpy_helper.from_array(np.array([-1], np.int64), "axes"))
    out = g.op("Squeeze", ["input", "axes"])
    mod = import_onnx(g.model({"input": (1, 4, 1)}, out, (1, 4))).mod
    relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)  # std::bad_alloc on axis=[-1]
    assert "axis=[2]" in mod["main"].script()
