"""Shape folding: run-time shape chains become constants once the inputs are static."""
import numpy as np
import onnx
import pytest
from graphs import GraphBuilder, run_ort
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.errors import SqueezeError
from compiler.fold_shapes import fold_shapes
from compiler.cli import main
from compiler.frontend import import_onnx
from passes.prune import PruneConfig, prune_model


def _const(g: GraphBuilder, values, dtype=np.int64) -> str:
    name = f"c{len(g.inits)}"
    g.inits.append(numpy_helper.from_array(np.array(values, dtype), name))
    return name


def _flatten_by_shape_chain(dims, hidden: int = 0) -> onnx.ModelProto:
    """Conv (after a Conv + Relu of ``hidden`` channels, if any), then Reshape to ``[N, C, H*W]``
    computed as Shape → Gather → Mul → Unsqueeze → Concat."""
    g = GraphBuilder()
    y = g.conv(g.op("Relu", [g.conv("input", 3, hidden)]), hidden, 4) if hidden else g.conv("input", 3, 4)
    shape = g.op("Shape", [y])
    n, c = (g.op("Gather", [shape, _const(g, i)], axis=0) for i in (0, 1))
    hw = g.op("Mul", [g.op("Gather", [shape, _const(g, 2)], axis=0), g.op("Gather", [shape, _const(g, 3)], axis=0)])
    parts = [g.op("Unsqueeze", [v, _const(g, [0])]) for v in (n, c, hw)]
    target = g.op("Cast", [g.op("Concat", parts, axis=0)], to=TensorProto.INT64)
    out = g.op("Reshape", [y, target])
    return g.model({"input": dims}, out, ("N", 4, "HW"))


def test_shape_gather_concat_chain_folds_and_matches_ort():
    model = _flatten_by_shape_chain(("N", 3, "H", "W"))
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)
    program = import_onnx(model, {"input": x.shape})
    assert program.outputs[0].shape == (2, 4, 30)
    got = compiler.Module(compiler.compile(model, input_shapes={"input": x.shape})).run({"input": x})
    np.testing.assert_allclose(next(iter(got.values())), run_ort(model, {"input": x})[0], rtol=1e-5, atol=1e-5)


def test_prune_and_inspect_import_the_folded_model(tmp_path, capsys):
    """Pruning traces the import of the folded model (it had died in the Relax importer)."""
    model = _flatten_by_shape_chain(("N", 3, "H", "W"), hidden=8)
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)
    pruned = prune_model(model, PruneConfig("filter", 0.5, "l1"), {"input": x.shape})
    assert pruned.summary["macs_after"] < pruned.summary["macs_before"]
    assert run_ort(pruned.onnx, {"input": x})[0].shape == (1, 4, 36)
    onnx.save(model, tmp_path / "m.onnx")
    assert main(["inspect", str(tmp_path / "m.onnx"), "--input-shape", "input:1x3x6x6"]) == 0
    assert "conv2d" in capsys.readouterr().out


def test_minus_one_and_zero_dims_are_overridden():
    model = _flatten_by_shape_chain((1, 3, 5, 6))
    for value in (-1, 0):
        for i in (2, 3):
            dim = model.graph.input[0].type.tensor_type.shape.dim[i]
            dim.Clear()
            dim.dim_value = value
        assert import_onnx(model, {"input": (1, 3, 7, 8)}).outputs[0].shape == (1, 4, 56)


def test_weights_and_their_chains_stay_untouched():
    g = GraphBuilder()
    big = _const(g, np.ones((300, 300)), np.float32)
    doubled = g.op("Mul", [big, _const(g, np.full((300, 300), 2.0), np.float32)])
    out = g.op("MatMul", ["input", g.op("Identity", [doubled])])
    folded = fold_shapes(g.model({"input": (1, 300)}, out, (1, 300)), {"input": (1, 300)})
    assert [n.op_type for n in folded.graph.node] == ["Mul", "Identity", "MatMul"]


def test_identity_of_a_weight_folds():
    g = GraphBuilder()
    w = g.weight((4, 3, 1, 1))
    out = g.op("Conv", ["input", g.op("Identity", [w])])
    folded = fold_shapes(g.model({"input": (1, 3, 4, 4)}, out, (1, 4, 4, 4)), {"input": (1, 3, 4, 4)})
    assert [n.op_type for n in folded.graph.node] == ["Conv"] and len(folded.graph.initializer) == 1


def test_shape_known_only_at_run_time_is_one_line_naming_the_node():
    g = GraphBuilder()
    out = g.op("Reshape", ["input", "target"], name="reshape_by_input")
    graph = helper.make_graph(g.nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 12]),
                                             helper.make_tensor_value_info("target", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(SqueezeError, match=r"node 'reshape_by_input' \(Reshape\) takes its shape from values known "
                                           r"only at run time.*--input-shape") as err:
        import_onnx(model)
    assert "\n" not in str(err.value)
