"""Lookup-table activations: each region's table against an independent numpy definition."""
import math

import numpy as np
import pytest
from graphs import GraphBuilder
from onnx import TensorProto, helper

from compiler.frontend import import_onnx
from compiler.ir import bindings, use_counts
from passes.quantize import lut


def _erf(x):
    return np.array([math.erf(v) for v in x])


# Independent definitions (the ONNX operator spec's formulas, written out here).
REFERENCE = {
    "HardSwish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "HardSigmoid": lambda x: np.clip(float(np.float32(0.2)) * x + 0.5, 0.0, 1.0),  # alpha as the model stores it
    "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "Tanh": np.tanh,
    "Gelu": lambda x: 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),
    "SiLU": lambda x: x / (1.0 + np.exp(-x)),
}


def _function(op: str):
    g = GraphBuilder()
    if op == "SiLU":
        out = g.op("Mul", ["input", g.op("Sigmoid", ["input"])])
    else:
        out = g.op(op, ["input"], **({"alpha": 0.2, "beta": 0.5} if op == "HardSigmoid" else {}))
    graph = helper.make_graph(g.nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 8])])
    return import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])).mod["main"]


@pytest.mark.parametrize("op", REFERENCE)
def test_table_matches_the_operator_definition(op):
    func = _function(op)
    start, order = func.params[0], bindings(func)
    members, sink = lut.region_after(start, order, use_counts(func)[0])
    assert sink.same_as(order[-1].var) and len(members) == len(order)
    codes = np.arange(0, 256)
    in_scale, in_zero, out_scale, out_zero = 0.0473, 128, 0.0191, 60
    got = lut.table(members, start, codes, in_scale, in_zero, out_scale, out_zero, 0, 255)
    real = REFERENCE[op](in_scale * (codes - in_zero))
    want = np.clip(np.round(real / out_scale) + out_zero, 0, 255)
    tie = np.abs(np.abs(real / out_scale) % 1.0 - 0.5) < 1e-6  # halfway: float order of operations decides
    np.testing.assert_array_equal(got[~tie], want[~tie])
    assert np.all(np.abs(got - want)[tie] <= 1) and tie.sum() <= 2


def test_region_stops_before_a_value_used_outside():
    g = GraphBuilder()
    s = g.op("Sigmoid", ["input"])
    m = g.op("Mul", ["input", s])
    out = g.op("Concat", [m, s], axis=1)  # the sigmoid is used outside the region
    graph = helper.make_graph(g.nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 16])])
    func = import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])).mod["main"]
    order = bindings(func)
    members, sink = lut.region_after(func.params[0], order, use_counts(func)[0])
    assert [b.var for b in members] == [order[0].var] and sink.same_as(order[0].var)


def test_scaling_alone_is_left_to_requantization():
    g = GraphBuilder()
    out = g.op("Relu", [g.op("Mul", ["input", "two"])])
    graph = helper.make_graph(g.nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    func = import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])).mod["main"]
    assert lut.region_after(func.params[0], bindings(func), use_counts(func)[0]) is None
