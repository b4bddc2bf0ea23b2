"""Remove pruned channels: slice the weights, fix the ops that spell channel counts, re-import.

The edit happens on the ONNX model in the importer's form (weights as named initializers), so
the pruned model can be saved for fine-tuning elsewhere and re-imported for compilation, which
re-infers every shape. :func:`masked_params` gives the same network with the removed channels
zeroed instead, at the original sizes.
"""
from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.errors import SqueezeError

from .depgraph import DepGraph, Plan
from .onnxmap import initializer_names


def masked_params(params: Mapping[str, np.ndarray], graph: DepGraph, plan: Plan) -> dict[str, np.ndarray]:
    """Copy of ``params`` with every weight row of the removed channels set to zero."""
    out = dict(params)
    for name, axes in graph.param_kept(plan).items():
        arr = out[name].copy()
        for axis, kept in axes:
            gone = np.setdiff1d(np.arange(arr.shape[axis]), kept)
            index = [slice(None)] * arr.ndim
            index[axis] = gone
            arr[tuple(index)] = 0
        out[name] = arr
    return out


def sliced_params(params: Mapping[str, np.ndarray], graph: DepGraph, plan: Plan) -> dict[str, np.ndarray]:
    """Copy of ``params`` with the removed channels cut out of every weight."""
    out = dict(params)
    for name, axes in graph.param_kept(plan).items():
        for axis, kept in axes:
            out[name] = np.take(out[name], kept, axis=axis)
    return out


def prune_onnx(proto: onnx.ModelProto, graph: DepGraph, plan: Plan, params: Mapping[str, np.ndarray],
               node_names: Mapping[int, str]) -> onnx.ModelProto:
    """The pruned ONNX model.

    Parameters
    ----------
    proto : onnx.ModelProto
        The model as the importer takes it (:func:`compiler.frontend.prepare_onnx`); not modified.
    graph : DepGraph
        Its dependency graph.
    plan : dict
        Group id → kept channel indices.
    params : dict
        Weights at the original sizes (possibly re-fitted); written into the initializers.
    node_names : dict
        Binding position → ONNX node name (:func:`passes.prune.onnxmap.node_names`).
    """
    out = copy.deepcopy(proto)
    inits = {t.name: t for t in out.graph.initializer}
    for name, arr in sliced_params(params, graph, plan).items():
        onnx_name = initializer_names(out).get(name)
        if onnx_name is not None:
            inits[onnx_name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), onnx_name))
    removed = graph.removed(plan)
    nodes = {n.name: n for n in out.graph.node}
    t = graph.tracer

    def node_of(idx: int, op_types: tuple[str, ...]) -> onnx.NodeProto | None:
        node = nodes.get(node_names.get(idx, ""))
        if node is None:
            raise SqueezeError(f"cannot find the ONNX node of Relax binding {idx} ({t.name(idx)}): "
                               "give every node a unique name before pruning")
        return node if node.op_type in op_types else None

    for idx in t.reshapes:
        var = t.bindings[idx].var
        new = graph.value_shape(var, removed)
        node = node_of(idx, ("Reshape",)) if new != list(t.shape(var)) else None
        if node is not None:
            spec = _constant(out, node.input[1]).copy()
            for i, (old, size) in enumerate(zip(t.shape(var), new)):
                if spec[i] not in (0, -1) and old != size:
                    spec[i] = size
            node.input[1] = _add_constant(out, f"{node.name}/shape_pruned", spec)
    for idx, axis in t.splits.items():
        sizes = [graph.new_size(t.field(t.bindings[idx].var, k)[axis], removed)
                 for k in range(len(t.bindings[idx].var.ty.fields))]
        node = node_of(idx, ("Split",))
        if node is not None and sizes != [int(f.shape[axis]) for f in t.bindings[idx].var.ty.fields]:
            _set_split(out, node, sizes)
    for idx, slot in t.conv_groups.items():
        groups = graph.new_size(slot, removed)
        node = node_of(idx, ("Conv",)) if groups != t.sizes[slot] else None
        for attr in node.attribute if node is not None else ():
            if attr.name == "group":
                attr.i = groups
    _drop_unused_initializers(out)
    try:
        onnx.checker.check_model(out)
    except onnx.checker.ValidationError as err:
        raise SqueezeError(f"pruned model is not valid ONNX: {str(err).splitlines()[0]}") from None
    return out


def _constant(proto: onnx.ModelProto, name: str) -> np.ndarray:
    for t in proto.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    raise SqueezeError(f"'{name}' is computed at run time: pruning needs constant shapes")


def _add_constant(proto: onnx.ModelProto, name: str, value: np.ndarray) -> str:
    taken = {t.name for t in proto.graph.initializer} | {o for n in proto.graph.node for o in n.output}
    unique, k = name, 0
    while unique in taken:
        k += 1
        unique = f"{name}_{k}"
    proto.graph.initializer.append(numpy_helper.from_array(np.asarray(value), unique))
    return unique


def _set_split(proto: onnx.ModelProto, node: onnx.NodeProto, sizes: list[int]) -> None:
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    if opset < 13:
        for attr in list(node.attribute):
            if attr.name == "split":
                node.attribute.remove(attr)
        node.attribute.append(onnx.helper.make_attribute("split", sizes))
        return
    for attr in list(node.attribute):
        if attr.name == "num_outputs":
            node.attribute.remove(attr)
    name = _add_constant(proto, f"{node.name}/split_pruned", np.asarray(sizes, np.int64))
    if len(node.input) > 1:
        node.input[1] = name
    else:
        node.input.append(name)


def _drop_unused_initializers(proto: onnx.ModelProto) -> None:
    graph = proto.graph
    used = {i for n in graph.node for i in n.input} | {v.name for v in [*graph.input, *graph.output]}
    kept = [t for t in graph.initializer if t.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
