"""Numerics of the default x86 schedules against ONNX Runtime, over a table of shapes.

Each case is a one- or two-node ONNX graph compiled for the host x86 target; the test also
checks which schedule rule handled its main PrimFunc, so a rule that silently declines (and
leaves the op to a slower fallback) fails too.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
import tvm_ffi
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from compiler.build import lower
from compiler.frontend import import_onnx
from targets import get_target
from targets.schedules import RULE_ATTR, default_schedule
from targets.schedules.common import RegisterTile, VectorISA, pick_register_tile

RNG = np.random.default_rng(0)
TOLERANCE = 1e-4  # max |out - ref| relative to max |ref|


def _model(nodes, inputs, output, inits=(), opset=17) -> onnx.ModelProto:
    """A single-output ONNX model; ``inputs`` are ``(name, shape)``, ``inits`` arrays by name."""
    graph = helper.make_graph(
        nodes,
        "case",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)


def _weights(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _run(model: onnx.ModelProto, rule: str) -> None:
    """Compile ``model`` for x86, compare with ORT and check ``rule`` scheduled something."""
    spec = get_target("x86")
    program = import_onnx(model)
    mod = lower(program, spec)
    rules = {str(f.attrs[RULE_ATTR]) for _, f in mod.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and RULE_ATTR in f.attrs}
    assert rule in rules, f"{rule} did not apply (rules used: {sorted(rules)})"
    ex = tvm.compile(mod, spec.target, relax_pipeline=relax.pipeline.default_build_pipeline())
    vm = relax.VirtualMachine(ex, tvm.cpu())
    feeds = {s.name: RNG.standard_normal(s.shape).astype(np.float32) for s in program.inputs}
    out = vm["main"](*[tvm.runtime.tensor(feeds[s.name]) for s in program.inputs]).numpy()
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert out.shape == ref.shape
    err = np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-6)
    assert err <= TOLERANCE, f"relative error {err:.2e}"


# (batch, in_ch, height, width, out_ch, kernel, stride, pads, dilation, groups, epilogue)
CONV_CASES = [
    (1, 16, 8, 8, 32, 1, 1, (0, 0, 0, 0), 1, 1, "relu"),
    (1, 8, 10, 10, 16, 3, 1, (1, 1, 1, 1), 1, 1, "relu"),
    (1, 4, 11, 13, 24, 5, 2, (2, 2, 2, 2), 1, 1, "none"),
    (1, 3, 32, 32, 16, 7, 2, (3, 3, 3, 3), 1, 1, "relu"),
    (1, 8, 12, 12, 16, 3, 1, (2, 2, 2, 2), 2, 1, "clip"),
    (1, 8, 9, 10, 16, 3, 1, (1, 0, 2, 1), 1, 1, "none"),
    (1, 8, 9, 9, 16, 3, 1, (1, 1, 1, 1), 1, 2, "relu"),
    (1, 12, 7, 7, 12, 3, 1, (1, 1, 1, 1), 1, 3, "none"),
    (1, 32, 14, 14, 32, 3, 1, (1, 1, 1, 1), 1, 32, "clip"),
    (2, 24, 15, 13, 24, 3, 2, (1, 1, 1, 1), 1, 24, "relu"),
    (1, 48, 9, 9, 48, 5, 1, (2, 2, 2, 2), 1, 48, "none"),
    (1, 5, 9, 7, 7, 3, 1, (1, 1, 1, 1), 1, 1, "none"),
    (1, 4, 6, 6, 19, 3, 1, (1, 1, 1, 1), 1, 1, "relu"),
    (1, 64, 13, 13, 40, 1, 1, (0, 0, 0, 0), 1, 1, "residual"),
    (1, 32, 14, 14, 64, 1, 2, (0, 0, 0, 0), 1, 1, "none"),
    (2, 8, 8, 8, 16, 3, 1, (1, 1, 1, 1), 1, 1, "residual"),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:6])) + f"s{c[6]}g{c[9]}{c[10]}")
def test_conv2d(case):
    n, ic, h, w, oc, k, stride, pads, dil, groups, epilogue = case
    out_h = (h + pads[0] + pads[2] - dil * (k - 1) - 1) // stride + 1
    out_w = (w + pads[1] + pads[3] - dil * (k - 1) - 1) // stride + 1
    inits = [("w", _weights(oc, ic // groups, k, k)), ("b", RNG.standard_normal(oc).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride] * 2,
                              pads=list(pads), dilations=[dil] * 2, group=groups)]
    if epilogue == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    elif epilogue == "clip":
        inits += [("lo", np.array(0, np.float32)), ("hi", np.array(6, np.float32))]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    elif epilogue == "residual":
        inits.append(("r", RNG.standard_normal((1, oc, out_h, out_w)).astype(np.float32)))
        nodes.append(helper.make_node("Add", ["c", "r"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    _run(_model(nodes, [("x", [n, ic, h, w])], ("y", [n, oc, out_h, out_w]), inits), "schedule_conv2d")


def test_conv2d_weights_as_inputs():
    """A weight that is no constant is not packed at compile time; results still match."""
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    _run(_model([node], [("x", [1, 6, 9, 9]), ("w", [20, 6, 3, 3])], ("y", [1, 20, 9, 9])), "schedule_conv2d")


# (a_shape, b_shape, b_is_constant, transpose_b, epilogue)
MATMUL_CASES = [
    ((1, 64), (64, 10), True, False, "bias"),
    ((1, 256), (256, 1000), True, False, "bias"),
    ((5, 37), (37, 19), True, False, "none"),
    ((1, 128, 64), (64, 100), True, False, "gelu"),
    ((3, 16, 8), (3, 20, 8), False, True, "none"),
    ((2, 3, 7, 33), (2, 3, 33, 17), False, False, "none"),
    ((1, 4, 50, 16), (1, 4, 16, 50), False, False, "none"),
    ((13, 48), (48, 64), True, False, "relu"),
    ((32, 1, 64), (64, 48), True, False, "bias"),  # an RNN's input projection: tiles span the steps
    ((4, 3, 64), (64, 48), True, False, "bias"),  # a 4-row tile would straddle steps of 3 rows
    ((2, 16, 64), (64, 100), True, False, "relu"),
]


@pytest.mark.parametrize("case", MATMUL_CASES, ids=lambda c: f"{c[0]}x{c[1]}{'T' if c[3] else ''}-{c[4]}")
def test_matmul(case):
    a_shape, b_shape, constant, transpose_b, epilogue = case
    inputs, inits, nodes = [("a", list(a_shape))], [], []
    b_name = "b"
    if constant:
        inits.append(("b", _weights(*b_shape)))
    else:
        inputs.append(("b", list(b_shape)))
    if transpose_b:
        perm = list(range(len(b_shape) - 2)) + [len(b_shape) - 1, len(b_shape) - 2]
        nodes.append(helper.make_node("Transpose", ["b"], ["bt"], perm=perm))
        b_name = "bt"
        b_shape = tuple(b_shape[i] for i in perm)
    nodes.append(helper.make_node("MatMul", ["a", b_name], ["m"]))
    out_shape = list(a_shape[:-1]) + [b_shape[-1]]
    if epilogue == "bias":
        inits.append(("bias", RNG.standard_normal(b_shape[-1]).astype(np.float32)))
        nodes.append(helper.make_node("Add", ["m", "bias"], ["y"]))
    elif epilogue == "relu":
        nodes.append(helper.make_node("Relu", ["m"], ["y"]))
    elif epilogue == "gelu":
        inits += [("sqrt2", np.array(np.sqrt(2), np.float32)), ("one", np.array(1, np.float32)),
                  ("half", np.array(0.5, np.float32))]
        nodes += [helper.make_node("Div", ["m", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                  helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["m", "p"], ["q"]),
                  helper.make_node("Mul", ["q", "half"], ["y"])]
    else:
        nodes.append(helper.make_node("Identity", ["m"], ["y"]))
    _run(_model(nodes, inputs, ("y", out_shape), inits), "schedule_matmul")


def test_gemm_trans_b():
    node = helper.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1)
    inits = [("w", _weights(30, 72)), ("c", RNG.standard_normal(30).astype(np.float32))]
    _run(_model([node], [("a", [3, 72])], ("y", [3, 30]), inits), "schedule_matmul")


POOL_CASES = [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), (1, 16, 15, 15), (1, 16, 8, 8)),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2]), (2, 5, 8, 6), (2, 5, 4, 3)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), (1, 24, 7, 9), (1, 24, 7, 9)),
    ("GlobalAveragePool", {}, (1, 40, 7, 7), (1, 40, 1, 1)),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{c[0]}{c[2]}")
def test_pool_after_conv(case):
    """Pooling of a conv's NHWC output, as in CNNs (reduces over H and W, channels innermost)."""
    op, attrs, in_shape, out_shape = case
    channels = in_shape[1]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]), helper.make_node(op, ["c"], ["y"], **attrs)]
    model = _model(nodes, [("x", list(in_shape))], ("y", list(out_shape)), [("w", _weights(channels, channels, 1, 1))])
    _run(model, "schedule_pool")


def test_pool_nchw():
    """Without a conv the layout stays NCHW: the window slides along the contiguous axis."""
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    _run(_model([node], [("x", [1, 3, 17, 17])], ("y", [1, 3, 9, 9])), "schedule_pool")


def test_reduce_mean_spatial():
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, 2], keepdims=1)
    _run(_model([node], [("x", [2, 6, 5, 24])], ("y", [2, 1, 1, 24]), opset=13), "schedule_pool")


ROW_CASES = [
    ("Softmax", dict(axis=-1), (2, 5, 40)),
    ("Softmax", dict(axis=-1), (3, 7)),
    ("LayerNormalization", dict(axis=-1, epsilon=1e-5), (1, 7, 48)),
    ("ReduceMax", dict(axes=[-1], keepdims=1), (6, 64)),
    ("ReduceMax", dict(axes=[-1], keepdims=0), (3, 50)),
    ("GlobalAveragePool", {}, (1, 40, 7, 7)),
]


@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: f"{c[0]}{c[2]}")
def test_row_reduction(case):
    op, attrs, shape = case
    inputs, inits = ["x"], []
    if op == "LayerNormalization":
        inits = [("g", RNG.standard_normal(shape[-1]).astype(np.float32)),
                 ("beta", RNG.standard_normal(shape[-1]).astype(np.float32))]
        inputs += ["g", "beta"]
    out = list(shape)
    if op.startswith("Reduce"):
        out = out[:-1] + [1] if attrs["keepdims"] else out[:-1]
    elif op == "GlobalAveragePool":  # NCHW without a conv: H and W are the innermost axes
        out = out[:2] + [1, 1]
    model = _model([helper.make_node(op, inputs, ["y"], **attrs)], [("x", list(shape))], ("y", out), inits,
                   opset=13 if op.startswith("Reduce") else 17)
    _run(model, "schedule_row_reduction")


def test_elementwise():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Sigmoid", ["t"], ["s"]), helper.make_node("Mul", ["t", "s"], ["y"])]
    _run(_model(nodes, [("x", [1, 5, 33, 47])], ("y", [1, 33, 47, 5])), "schedule_elementwise")


@pytest.mark.parametrize("rows,cols", [(56, 64), (7, 512), (1, 1000), (13, 19), (128, 1024), (3, 7), (28, 24),
                                       (14, 40)])
def test_register_tile_divides_the_output(rows, cols):
    tile = pick_register_tile(rows, cols, VectorISA(512, 32), "float32")
    assert rows % tile.rows == 0
    assert cols % (tile.nvec * tile.vec) == 0 or tile.nvec == 1
    assert tile.rows * tile.nvec * tile.vec * 4 < 1024  # stays a stack (register) buffer
    assert tile.vec <= 16 and (tile.vec & (tile.vec - 1) == 0 or tile.vec == cols)


def test_register_tile_for_avx2():
    assert pick_register_tile(56, 64, VectorISA(256, 16), "float32") == RegisterTile(rows=4, nvec=2, vec=8)


def test_tuned_functions_are_left_alone():
    """PrimFuncs already marked scheduled (e.g. from a MetaSchedule database) are not touched."""
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [("x", [4, 64])], ("y", [4, 64]))
    target = get_target("x86").target
    with target:
        mod = relax.transform.LegalizeOps()(import_onnx(model).mod)
    gvar = next(g for g, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    mod[gvar] = mod[gvar].with_attr("tirx.is_scheduled", True)
    with target:
        out = default_schedule(target)(mod)
    (func,) = [f for _, f in out.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert tvm_ffi.structural_equal(func.body, mod[gvar].body)
    assert RULE_ATTR not in func.attrs


def test_argmax_reduction_is_not_taken_for_a_multiply_accumulate():
    """ArgMax reduces (index, value) pairs, its block body is no single store: the reduction
    schedules must pass it by (it crashed the FP32 compile of a real OCR model)."""
    import compiler
    from compiler.runtime import Module

    model = _model([helper.make_node("Conv", ["x", "w"], ["c"]),
                    helper.make_node("ArgMax", ["c"], ["i"], axis=1, keepdims=0)],
                   [("x", [1, 8, 6, 20])], ("i", [1, 6, 20]), [("w", _weights(12, 8, 1, 1))])
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    x = RNG.standard_normal((1, 8, 6, 20)).astype(np.float32)
    ours = next(iter(Module(compiler.compile(model)).run({"x": x}).values()))
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(ours, ref)
