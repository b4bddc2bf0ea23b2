"""ONNX → Program: a Relax module with detached weights and a static interface."""
from __future__ import annotations

import os
from typing import Mapping, Sequence, Union

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx
from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

from .errors import SqueezeError
from .program import Program, TensorSpec

ModelLike = Union[str, os.PathLike, onnx.ModelProto]
# ONNX ops that only wrap domain bookkeeping and are always accepted.
_DOMAINS_ACCEPTED = ("", "ai.onnx")


def load_onnx(model: ModelLike) -> onnx.ModelProto:
    """Read and validate an ONNX model from a path or a ``ModelProto``; unsupported ops are listed."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise SqueezeError(f"model file not found: {path}: check the path")
        try:
            proto = onnx.load(path)
        except Exception as err:  # protobuf raises several unrelated types
            raise SqueezeError(
                f"{path} is not a readable ONNX model ({type(err).__name__}): "
                "re-export it with torch.onnx.export or onnx.save"
            ) from None
        if not proto.graph.node:
            raise SqueezeError(f"{path} holds no ONNX graph (empty or truncated file): re-export it")
    missing = unsupported_ops(proto)
    if missing:
        listing = "; ".join(f"{op} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
                            for op, names in sorted(missing.items()))
        raise SqueezeError(f"unsupported ONNX ops: {listing}: rewrite them into supported ops before export")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0]
        raise SqueezeError(f"malformed ONNX model: {first}: fix the exporter output") from None
    return proto


def split_weights_and_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Make tensors of more than one element initializers (weights), and scalars ``Constant`` nodes.

    Weights become detached parameters; scalars (clip bounds, epsilons, shape values) stay
    compile-time constants so that the importer emits plain ops such as ``R.clip`` for them.
    """
    graph = proto.graph
    nodes, inits = [], []
    for tensor in graph.initializer:
        if int(np.prod(tensor.dims)) <= 1:
            nodes.append(onnx.helper.make_node("Constant", [], [tensor.name], value=tensor))
        else:
            inits.append(tensor)
    for node in graph.node:
        value = [a for a in node.attribute if a.name == "value"]
        if node.op_type == "Constant" and node.domain in _DOMAINS_ACCEPTED and value and int(np.prod(value[0].t.dims)) > 1:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value[0].t)
            tensor.name = node.output[0]
            inits.append(tensor)
        else:
            nodes.append(node)
    graph.ClearField("initializer")
    graph.initializer.extend(inits)
    graph.ClearField("node")
    graph.node.extend(nodes)
    return proto


def unsupported_ops(proto: onnx.ModelProto) -> dict[str, list[str]]:
    """Return ``{op_type: [node names]}`` for nodes the Relax importer cannot convert."""
    known = _get_convert_map()
    missing: dict[str, list[str]] = {}
    for i, node in enumerate(proto.graph.node):
        if node.op_type not in known or node.domain not in _DOMAINS_ACCEPTED:
            missing.setdefault(node.op_type, []).append(node.name or f"#{i}")
    return missing


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def _input_specs(
    proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]
) -> list[TensorSpec]:
    specs = []
    names = [i.name for i in _graph_inputs(proto)]
    for name in shapes:
        if name not in names:
            raise SqueezeError(f"--input-shape names unknown input '{name}': inputs are {names}")
    for value in _graph_inputs(proto):
        ttype = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
        dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
        if value.name in shapes:
            shape = tuple(int(s) for s in shapes[value.name])
            if len(shape) != len(dims) or any(d not in (None, s) for d, s in zip(dims, shape)):
                raise SqueezeError(
                    f"input '{value.name}' has shape {_fmt(dims)}, not {_fmt(shape)}: "
                    "give a shape that matches the model's static dims"
                )
        elif None in dims[1:]:
            raise SqueezeError(
                f"input '{value.name}' has dynamic shape {_fmt(dims)}: give a static one with "
                f"--input-shape {value.name}:{'x'.join(str(d or 1) for d in dims)}"
            )
        else:  # a dynamic leading (batch) dim defaults to 1, as in tvmc
            shape = tuple(d or 1 for d in dims)
        specs.append(TensorSpec(value.name, shape, dtype))
    return specs


def _fmt(dims: Sequence) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def import_onnx(
    model: ModelLike, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> Program:
    """Import an ONNX model as a :class:`Program`.

    Parameters
    ----------
    model : str, PathLike or onnx.ModelProto
        The model to import.
    input_shapes : dict, optional
        Static shapes for inputs with dynamic dims, e.g. ``{"input": (1, 3, 224, 224)}``.

    Returns
    -------
    Program
        Relax module with weights detached into ``Program.params``.
    """
    proto = split_weights_and_constants(load_onnx(model))
    inputs = _input_specs(proto, input_shapes or {})
    try:
        mod = from_onnx(
            proto,
            shape_dict={s.name: list(s.shape) for s in inputs},
            dtype_dict={s.name: s.dtype for s in inputs},
            keep_params_in_input=True,
        )
    except Exception as err:
        raise SqueezeError(f"ONNX import failed: {str(err).strip().splitlines()[-1]}") from None
    mod, detached = relax.frontend.detach_params(mod)
    mod = _attach_layer_names(mod, proto)
    main = mod["main"]
    num_inputs = len(inputs)
    params = {
        var.name: arr.numpy()
        for var, arr in zip(main.params[num_inputs:], detached.get("main", []))
    }
    outputs = _output_specs(main, [o.name for o in proto.graph.output])
    return Program(mod, params, inputs, outputs)


LAYER_ONNX_OPS = ("Conv", "Gemm", "MatMul")
LAYER_RELAX_OPS = ("relax.nn.conv2d", "relax.matmul")


def layer_calls(func: relax.Function) -> list:
    """Bindings of ``func`` that are conv2d/matmul layers, in order."""
    return [b for blk in func.body.blocks for b in blk.bindings
            if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") in LAYER_RELAX_OPS]


def _attach_layer_names(mod: tvm.IRModule, proto: onnx.ModelProto) -> tvm.IRModule:
    """Record the ONNX names of Conv/Gemm/MatMul nodes as ``main``'s ``squeeze.layer_names``.

    The importer converts nodes in graph order, one conv2d/matmul per such node, so the k-th
    layer of ``main`` is the k-th such node; names are attached only when the counts agree.
    """
    nodes = [n for n in proto.graph.node if n.op_type in LAYER_ONNX_OPS]
    if len(nodes) != len(layer_calls(mod["main"])):
        return mod
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)]
    mod["main"] = mod["main"].with_attr("squeeze.layer_names", names)
    return mod


def _output_specs(main: relax.Function, names: list[str]) -> list[TensorSpec]:
    ret = main.ret_ty
    fields = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    specs = []
    for name, field in zip(names, fields):
        if field.shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in field.shape):
            raise SqueezeError(f"output '{name}' has no static shape after import: give static input shapes")
        specs.append(TensorSpec(name, tuple(int(d) for d in field.shape), str(field.dtype)))
    return specs
