"""ONNX graphs with the shapes structured pruning must handle, and a check that each runs.

Each builder returns ``(model, input shape)``: residual, concat, groups, depthwise, se
(squeeze-excitation), attention (a transformer block), flatten (conv → Flatten → Gemm with a
spatial extent), barrier (an op without a pruning rule on the channel path).
"""
import numpy as np
import pytest
from graphs import GraphBuilder, run_ort
from onnx import TensorProto, helper, numpy_helper


def _head(g: GraphBuilder, x: str, c: int, classes: int = 10) -> str:
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    return g.op("Gemm", [x, g.weight((classes, c)), g.weight((classes,))], transB=1)


def residual():
    g = GraphBuilder(1)
    x = g.op("Relu", [g.bn(g.conv("input", 3, 8, bias=False), 8)])
    y = g.bn(g.conv(g.op("Relu", [g.bn(g.conv(x, 8, 12), 12)]), 12, 8), 8)
    x = g.op("Relu", [g.op("Add", [x, y])])
    short = g.bn(g.conv(x, 8, 16, k=1, stride=2, bias=False), 16)
    y = g.bn(g.conv(g.op("Relu", [g.conv(x, 8, 16, stride=2)]), 16, 16), 16)
    x = g.op("Relu", [g.op("Add", [short, y])])
    return g.model({"input": (1, 3, 16, 16)}, _head(g, x, 16), (1, 10)), (1, 3, 16, 16)


def concat():
    g = GraphBuilder(2)
    a = g.op("Relu", [g.conv("input", 3, 8)])
    b = g.op("Relu", [g.conv("input", 3, 6, k=1)])
    x = g.op("Concat", [a, b, "input"], axis=1)                # the input's 3 channels stay
    x = g.op("Relu", [g.conv(x, 17, 10)])
    c = g.op("Concat", [x, g.op("Relu", [g.conv(x, 10, 4)])], axis=1)
    return g.model({"input": (1, 3, 12, 12)}, _head(g, c, 14), (1, 10)), (1, 3, 12, 12)


def groups():
    g = GraphBuilder(3)
    x = g.op("Relu", [g.conv("input", 3, 8)])
    x = g.op("Relu", [g.bn(g.conv(x, 8, 12, group=2), 12)])   # 2 groups of 4 → 6 channels
    x = g.op("Relu", [g.conv(x, 12, 10)])
    return g.model({"input": (1, 3, 10, 10)}, _head(g, x, 10), (1, 10)), (1, 3, 10, 10)


def depthwise():
    g = GraphBuilder(4)
    stem = g.op("Clip", [g.bn(g.conv("input", 3, 8, bias=False), 8), *_clip_bounds(g)])
    x = g.op("Clip", [g.bn(g.conv(stem, 8, 24, k=1, bias=False), 24), *_clip_bounds(g)])
    x = g.op("Clip", [g.bn(g.conv(x, 24, 24, bias=False, group=24), 24), *_clip_bounds(g)])
    x = g.op("Add", [stem, g.bn(g.conv(x, 24, 8, k=1, bias=False), 8)])
    return g.model({"input": (1, 3, 12, 12)}, _head(g, x, 8), (1, 10)), (1, 3, 12, 12)


def se():
    g = GraphBuilder(5)
    x = g.op("Relu", [g.conv("input", 3, 16)])
    s = g.op("Relu", [g.conv(g.op("GlobalAveragePool", [x]), 16, 4, k=1)])
    gate = g.op("Sigmoid", [g.conv(s, 4, 16, k=1)])
    x = g.op("Relu", [g.conv(g.op("Mul", [x, gate]), 16, 12)])
    return g.model({"input": (1, 3, 10, 10)}, _head(g, x, 12), (1, 10)), (1, 3, 10, 10)


def flatten():
    g = GraphBuilder(6)
    x = g.op("MaxPool", [g.op("Relu", [g.conv("input", 3, 8, stride=2)])], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Flatten", [x])                                   # 8 channels × 4 × 4 positions
    out = g.op("Gemm", [g.op("Relu", [g.op("Gemm", [x, g.weight((12, 128)), g.weight((12,))], transB=1)]),
                        g.weight((10, 12)), g.weight((10,))], transB=1)
    return g.model({"input": (1, 3, 16, 16)}, out, (1, 10)), (1, 3, 16, 16)


def barrier():
    g = GraphBuilder(7)
    x = g.op("Relu", [g.conv("input", 3, 8)])
    x = g.op("Slice", [x, _ints(g, [0]), _ints(g, [6]), _ints(g, [1])], name="channel_slice")
    x = g.op("Relu", [g.conv(x, 6, 10)])
    return g.model({"input": (1, 3, 8, 8)}, _head(g, x, 10), (1, 10)), (1, 3, 8, 8)


def attention(seq: int = 8, dim: int = 32, heads: int = 4, hidden: int = 64):
    """Post-norm transformer block spelled out like the torch exporter writes it."""
    g = GraphBuilder(8)
    head_dim = dim // heads
    qkv = g.op("Add", [g.weight((3 * dim,)), g.op("MatMul", ["input", g.weight((dim, 3 * dim))])])
    x = g.op("Transpose", [g.op("Reshape", [qkv, _ints(g, [1, seq, 3, heads, head_dim])])], perm=[2, 0, 3, 1, 4])
    q, k, v = (f"qkv_{i}" for i in range(3))
    g.nodes.append(helper.make_node("Split", [x, _ints(g, [1, 1, 1])], [q, k, v], axis=0, name="split_qkv"))
    q, k, v = (g.op("Squeeze", [t, _ints(g, [0])]) for t in (q, k, v))
    scores = g.op("Div", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]), _scalar(g, head_dim ** 0.5)])
    att = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    att = g.op("Reshape", [g.op("Transpose", [att], perm=[0, 2, 1, 3]), _ints(g, [1, seq, dim])])
    x = g.op("Add", ["input", g.op("Add", [g.weight((dim,)), g.op("MatMul", [att, g.weight((dim, dim))])])])
    x = g.op("LayerNormalization", [x, g.weight((dim,), positive=True), g.weight((dim,))], axis=-1)
    h = g.op("Add", [g.weight((hidden,)), g.op("MatMul", [x, g.weight((dim, hidden))])])
    gelu = g.op("Mul", [g.op("Mul", [h, g.op("Add", [g.op("Erf", [g.op("Div", [h, _scalar(g, 2 ** 0.5)])]),
                                                    _scalar(g, 1.0)])]), _scalar(g, 0.5)])
    x = g.op("Add", [x, g.op("Add", [g.weight((dim,)), g.op("MatMul", [gelu, g.weight((hidden, dim))])])])
    out = g.op("LayerNormalization", [x, g.weight((dim,), positive=True), g.weight((dim,))], axis=-1)
    return g.model({"input": (1, seq, dim)}, out, (1, seq, dim), opset=17), (1, seq, dim)


def _clip_bounds(g: GraphBuilder) -> list[str]:
    return [_scalar(g, 0.0), _scalar(g, 6.0)]


def _ints(g: GraphBuilder, values: list[int]) -> str:
    g._n += 1
    name = f"i{g._n}"
    g.inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
    return name


def _scalar(g: GraphBuilder, value: float) -> str:
    g._n += 1
    name = f"s{g._n}"
    g.inits.append(helper.make_tensor(name, TensorProto.FLOAT, [], [value]))
    return name


GRAPHS = {f.__name__: f for f in (residual, concat, groups, depthwise, se, flatten, barrier, attention)}


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_runs_in_onnxruntime(name):
    model, shape = GRAPHS[name]()
    out = run_ort(model, {"input": np.random.default_rng(0).standard_normal(shape).astype(np.float32)})[0]
    assert np.all(np.isfinite(out)) and out.std() > 0
