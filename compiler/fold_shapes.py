"""Fold an ONNX model's shape computations to constants once its input shapes are static.

Exporters compute reshape targets at run time: ``Shape → Gather → Unsqueeze → Concat → Reshape``
(PaddlePaddle, older PyTorch), anchor grids from ``Shape → Range`` (YOLO heads). With static
inputs those values are known when compiling; the Relax importer, however, needs them as
constants. This module evaluates such nodes with ONNX's own reference implementation
(``onnx.reference``) and replaces them with initializers, repeating ONNX shape inference
between rounds so that a ``Shape`` further down sees the shapes the last round made static.
Weights and quantization nodes are never touched: only small results (at most
:data:`MAX_ELEMENTS` elements) of the ops in :data:`FOLDABLE` are folded. An ``If`` whose
condition folds is replaced by its taken branch (:mod:`compiler.control_flow`), whose nodes
fold in the next rounds.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from .control_flow import check_conditions, inline_if
from .errors import SqueezeError

# Ops whose constant-input results are shape arithmetic (or small tables such as anchors).
FOLDABLE = frozenset({
    "Shape", "Size", "Gather", "GatherElements", "Concat", "Unsqueeze", "Squeeze", "Slice", "Cast",
    "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Floor", "Ceil", "Min", "Max", "Pow", "Sqrt",
    "Equal", "Less", "Greater", "Not", "And", "Or", "Where", "Range", "ConstantOfShape", "Expand",
    "Reshape", "Flatten", "Transpose", "Tile", "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin",
    "Identity", "CumSum",
})
MAX_ELEMENTS = 1 << 16
# Inputs that must be known when compiling, by op: (what they give, their indices).
STATIC_INPUTS = {"Reshape": ("shape", (1,)), "Expand": ("shape", (1,)), "ConstantOfShape": ("shape", (0,)),
                 "Tile": ("repeats", (1,)), "Range": ("bounds", (0, 1, 2)), "Slice": ("bounds", (1, 2, 3, 4)),
                 "Resize": ("scales or sizes", (1, 2, 3)), "Upsample": ("scales", (1,))}
_ROUNDS = 32


def constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            attr = node.attribute[0]
            if attr.name == "value":
                values[node.output[0]] = numpy_helper.to_array(attr.t)
            elif attr.name in ("value_int", "value_ints", "value_float", "value_floats"):
                values[node.output[0]] = np.array(helper.get_attribute_value(attr),
                                                  np.int64 if "int" in attr.name else np.float32)
    return values


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """``{tensor: shape}`` for every tensor whose shape ONNX shape inference makes fully static."""
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is best effort: what it cannot tell stays unfolded
        inferred = model
    shapes = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        ttype = value.type.tensor_type
        if value.type.HasField("tensor_type") and ttype.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
            if all(d >= 0 for d in dims):
                shapes[value.name] = tuple(dims)
    return shapes


def _shape_of(node: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Size":
        return np.array(int(np.prod(shape)), np.int64)
    rank = len(shape)
    start, end = attrs.get("start", 0), attrs.get("end", rank)
    return np.array(shape[max(start + rank, 0) if start < 0 else start:
                          end + rank if end < 0 else end], np.int64)


def _evaluate(node: onnx.NodeProto, feeds: Mapping[str, np.ndarray], opsets: dict[str, int]) -> list[np.ndarray]:
    names = [n for n in node.input if n]
    graph = helper.make_graph(
        [node], "fold", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(feeds[n].dtype), None)
                         for n in dict.fromkeys(names)],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    return list(ReferenceEvaluator(model).run(None, {n: feeds[n] for n in names}))


def _fold_node(node: onnx.NodeProto, values: dict, shapes: Mapping, opsets: dict) -> list[np.ndarray] | None:
    """The outputs of ``node`` if it folds, else None."""
    if node.op_type not in FOLDABLE or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in ("Shape", "Size"):
        shape = values[node.input[0]].shape if node.input[0] in values else shapes.get(node.input[0])
        return None if shape is None else [_shape_of(node, shape)]
    inputs = [n for n in node.input if n]
    if not all(n in values for n in inputs):
        return None
    if node.op_type != "Identity" and any(values[n].size > MAX_ELEMENTS for n in inputs):
        return None  # a weight: left to the importer and the passes
    try:
        outs = _evaluate(node, values, opsets)
    except Exception:  # an op the reference cannot run with these inputs stays in the graph
        return None
    if node.op_type != "Identity" and any(np.asarray(o).size > MAX_ELEMENTS for o in outs):
        return None
    return [np.asarray(o) for o in outs]


def _with_static_inputs(proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for value in model.graph.input:
        if value.name in shapes:
            shape = value.type.tensor_type.shape
            shape.ClearField("dim")
            for d in shapes[value.name]:
                shape.dim.add().dim_value = int(d)
    model.graph.ClearField("value_info")  # the exporter's shapes may hold dynamic dims
    for value in model.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            dim.Clear()
    return model


def fold_shapes(proto: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """Return ``proto`` with static ``input_shapes`` and its shape computations folded.

    Parameters
    ----------
    proto : onnx.ModelProto
        The model (left unchanged).
    input_shapes : dict
        A static shape for every graph input.

    Returns
    -------
    onnx.ModelProto
        A copy whose graph inputs carry ``input_shapes`` and in which every node of
        :data:`FOLDABLE` with known inputs became an initializer.

    Raises
    ------
    SqueezeError
        When a shape input (of Reshape, Expand, Tile, ...) still depends on run-time values.
    """
    model = _with_static_inputs(proto, input_shapes)
    opsets = {o.domain: o.version for o in model.opset_import if o.domain in ("", "ai.onnx")}
    for _ in range(_ROUNDS):
        values, shapes = constants(model.graph), static_shapes(model)
        kept, folded, inlined = [], [], False
        for node in model.graph.node:
            if node.op_type == "If" and node.input[0] in values:
                nodes, inits = inline_if(node, values[node.input[0]])
                kept += nodes
                folded += inits
                inlined = True
                continue
            outs = None if node.op_type == "Constant" else _fold_node(node, values, shapes, opsets)
            if outs is None:
                kept.append(node)
                continue
            for name, arr in zip(node.output, outs):
                values[name] = arr
                folded.append(numpy_helper.from_array(arr, name))
        if not folded and not inlined:
            break
        model.graph.ClearField("node")
        model.graph.node.extend(kept)
        model.graph.initializer.extend(folded)
    drop_unused(model.graph)
    _check_static(model.graph, constants(model.graph))
    check_conditions(model.graph)
    return model


def drop_unused(graph: onnx.GraphProto) -> None:
    """Drop initializers and Constant nodes no node uses any more (and the graph inputs that
    name those initializers, as older exporters list them)."""
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    dropped = {t.name for t in graph.initializer if t.name not in used}
    kept = [t for t in graph.initializer if t.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    for value in [v for v in graph.input if v.name in dropped]:
        graph.input.remove(value)
    nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    graph.ClearField("node")
    graph.node.extend(nodes)


class Names:
    """Fresh tensor names under one rewritten node's name."""

    def __init__(self, base: str):
        self.base, self.count = base, 0

    def new(self, what: str) -> str:
        self.count += 1
        return f"{self.base}__squeeze_{what}{self.count}"

    def const(self, values: list[int], inits: list) -> str:
        name = f"{self.base}__squeeze_shape{len(inits)}"
        inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name


def _check_static(graph: onnx.GraphProto, values: Mapping[str, np.ndarray]) -> None:
    for node in graph.node:
        what, indices = STATIC_INPUTS.get(node.op_type, ("", ()))
        if all(node.input[i] in values for i in indices if i < len(node.input) and node.input[i]):
            continue
        raise SqueezeError(
            f"node '{node.name or node.output[0]}' ({node.op_type}) takes its {what} from values known only "
            "at run time, even with static input shapes: Squeeze compiles static shapes only; re-export the "
            "model with that shape fixed (or give other static shapes with --input-shape)")
