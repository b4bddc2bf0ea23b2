"""ONNX → Program: a Relax module with detached weights and a static interface."""
from __future__ import annotations

import contextlib
import io
import os
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx
from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

from .errors import SqueezeError
from .conv_transpose import decompose_conv_transpose
from .fold_shapes import STATIC_INPUTS, constants, fold_shapes, static_shapes
from .ir import bindings, op_name, rebind, with_main
from .onnx_checks import check_attributes
from .program import Program, TensorSpec
from .qonnx import has_low_bit_quantizers, lower_quantizers
from .recurrent import RECURRENT_OPS, decompose_recurrent

ModelLike = Union[str, os.PathLike, onnx.ModelProto]
# ONNX ops the importer lacks that are rewritten before import: If with a condition that folds
# (compiler.control_flow), LSTM/GRU unrolled (compiler.recurrent).
REWRITTEN = ("If", *RECURRENT_OPS)
# ONNX ops that only wrap domain bookkeeping and are always accepted.
_DOMAINS_ACCEPTED = ("", "ai.onnx")


def load_onnx(model: ModelLike) -> onnx.ModelProto:
    """Read and validate an ONNX model from a path or a ``ModelProto``; unsupported ops are listed.
    QONNX and int4/uint4 quantizers come back as 8-bit-container Q/DQ (:mod:`compiler.qonnx`)."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        path = os.fspath(model)
        if os.path.isdir(path):
            raise SqueezeError(f"{path} is a directory, not an ONNX model: give the .onnx file")
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
    if has_low_bit_quantizers(proto):
        proto = lower_quantizers(proto)
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
    """Make tensors of more than one element initializers (weights), and scalars and shape
    operands ``Constant`` nodes.

    Weights become detached parameters; scalars (clip bounds, epsilons) and the operands that
    must be known when compiling (:data:`~compiler.fold_shapes.STATIC_INPUTS`: Reshape and Expand
    shapes, Slice bounds, ...) stay compile-time constants, so that the importer emits plain ops
    such as ``R.clip`` and static shapes for them (an Expand whose shape is a parameter gets a
    shape known only at run time).
    """
    graph = proto.graph
    static = {node.input[i] for node in graph.node for i in STATIC_INPUTS.get(node.op_type, ("", ()))[1]
              if i < len(node.input)}
    nodes, inits = [], []
    for tensor in graph.initializer:
        if int(np.prod(tensor.dims)) <= 1 or tensor.name in static:
            nodes.append(onnx.helper.make_node("Constant", [], [tensor.name], value=tensor))
        else:
            inits.append(tensor)
    for node in graph.node:
        value = [a for a in node.attribute if a.name == "value"]
        if node.op_type == "Constant" and node.domain in _DOMAINS_ACCEPTED and value \
                and int(np.prod(value[0].t.dims)) > 1 and node.output[0] not in static:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value[0].t)
            tensor.name = node.output[0]
            inits.append(tensor)
        else:
            nodes.append(node)
    scalars = {n.output[0] for n in nodes if n.op_type == "Constant"}
    for value in [v for v in graph.input if v.name in scalars]:  # older exporters list initializers
        graph.input.remove(value)
    graph.ClearField("initializer")
    graph.initializer.extend(inits)
    graph.ClearField("node")
    graph.node.extend(nodes)
    return proto


def unsupported_ops(proto: onnx.ModelProto) -> dict[str, list[str]]:
    """Return ``{op_type: [node names]}`` for nodes (in If branches too) that neither the Relax
    importer converts nor Squeeze rewrites before import (:data:`REWRITTEN`)."""
    known = {*_get_convert_map(), *REWRITTEN}
    missing: dict[str, list[str]] = {}

    def visit(graph: onnx.GraphProto) -> None:
        for i, node in enumerate(graph.node):
            if node.op_type not in known or node.domain not in _DOMAINS_ACCEPTED:
                missing.setdefault(node.op_type, []).append(node.name or f"#{i}")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)

    visit(proto.graph)
    return missing


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


_BATCH = "__squeeze_batch_{}"  # dim_param marking an overridden batch dim during shape inference


def _dims(value: onnx.ValueInfoProto) -> list:
    """The dims of a graph input: an int when static, else its name (``dim_param``) or None."""
    dims = []
    for d in value.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:  # a named dim, '?', or a 0/-1 placeholder: dynamic
            dims.append(d.dim_param or None)
    return dims


def _input_specs(
    proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int]],
    log: Callable[[str], None] | None = None,
) -> tuple[list[TensorSpec], dict[str, tuple[int, int]]]:
    """The static input specs, and ``{input: (exported batch, new batch)}`` for each input whose
    static batch (first) dim ``shapes`` overrides."""
    specs, rebatched = [], {}
    names = [i.name for i in _graph_inputs(proto)]
    for name in shapes:
        if name not in names:
            raise SqueezeError(f"--input-shape names unknown input '{name}': inputs are {names}")
    for value in _graph_inputs(proto):
        ttype = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
        dims = _dims(value)
        static = [d if isinstance(d, int) else None for d in dims]
        if value.name in shapes:
            shape = tuple(int(s) for s in shapes[value.name])
            if len(shape) != len(dims) or any(d not in (None, s) for d, s in zip(static[1:], shape[1:])):
                raise SqueezeError(
                    f"input '{value.name}' has shape {_fmt(dims)}, not {_fmt(shape)}: give a shape that matches "
                    "the model's static dims (only the batch, the first dim, may be changed)"
                )
            if shape and static[0] is not None and shape[0] != static[0]:
                rebatched[value.name] = (static[0], shape[0])
        elif None in static[1:]:
            raise SqueezeError(
                f"input '{value.name}' has dynamic shape {_fmt(dims)}: give a static one with "
                f"--input-shape {value.name}:{'x'.join(str(d if isinstance(d, int) else 1) for d in dims)}"
            )
        else:  # a dynamic leading (batch) dim defaults to 1, as in tvmc, and says so
            shape = tuple(d if isinstance(d, int) else 1 for d in dims)
            if dims and static[0] is None and log is not None:
                label = f" ('{dims[0]}')" if dims[0] else ""
                rest = "".join(f"x{d}" for d in shape[1:])
                log(f"input '{value.name}': dynamic dim 0{label} fixed to 1; "
                    f"pass --input-shape {value.name}:N{rest} to choose")
        specs.append(TensorSpec(value.name, shape, dtype))
    return specs, rebatched


def _fmt(dims: Sequence) -> str:
    return "x".join(str(d) if isinstance(d, int) else "?" if d is None else str(d) for d in dims)


def _shape_constants(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every constant 1-D int64 tensor (initializers and ``Constant`` nodes), by name."""
    out = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT64}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.domain in _DOMAINS_ACCEPTED:
            value = [a for a in node.attribute if a.name == "value"]
            if value and value[0].t.data_type == onnx.TensorProto.INT64:
                out[node.output[0]] = numpy_helper.to_array(value[0].t)
    return out


def _inferred_dim0(proto: onnx.ModelProto) -> dict[str, object]:
    """``{tensor: its first dim}`` from ONNX shape inference (an int, a dim_param, or absent)."""
    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception:  # inference is best effort here: what it cannot tell is left alone
        return {}
    out = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        shape = value.type.tensor_type.shape
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape") and shape.dim:
            d = shape.dim[0]
            out[value.name] = d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
    return out


def follow_batch(proto: onnx.ModelProto, rebatched: Mapping[str, tuple[int, int]]) -> onnx.ModelProto:
    """Let Reshape nodes that hard-code the exported batch follow a new one.

    The inputs of ``rebatched`` (``{name: (exported batch, new batch)}``) get a symbolic batch
    and ONNX shape inference tells which tensors carry it: a Reshape of such a tensor whose
    constant target shape starts with the exported batch (``[1, -1]`` from a batch-1 export)
    gets the new batch there instead; a target shape starting with any other value is left as
    it is. A graph output that carried the exported batch and no longer follows it after that
    is an error (a batch hard-coded somewhere else).
    """
    if not rebatched:
        return proto
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.ClearField("value_info")  # the exporter's shapes hold the old batch
    for value in probe.graph.output:
        value.type.tensor_type.ClearField("shape")
    symbols = {}
    for value in probe.graph.input:
        if value.name in rebatched:
            dim = value.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_param = symbols.setdefault(value.name, _BATCH.format(len(symbols)))
    batch_of = {symbols[n]: b for n, b in rebatched.items()}  # symbol -> (old, new)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    done: set[int] = set()
    for _ in range(sum(n.op_type == "Reshape" for n in proto.graph.node) + 1):
        dim0 = _inferred_dim0(probe)
        consts = _shape_constants(probe)
        changed = False
        for i, node in enumerate(probe.graph.node):
            if node.op_type != "Reshape" or i in done or len(node.input) < 2 or node.input[1] not in consts:
                continue
            symbol, target = dim0.get(node.input[0]), consts[node.input[1]]
            if symbol not in batch_of or target.ndim != 1 or not target.size or int(target[0]) != batch_of[symbol][0]:
                continue
            done.add(i)
            changed = True
            for model, first in ((probe, 0), (out, batch_of[symbol][1])):  # 0: copy the symbolic dim
                name = f"{node.input[1]}__squeeze_batch{i}"
                fixed = target.copy()
                fixed[0] = first
                model.graph.initializer.append(numpy_helper.from_array(fixed, name))
                model.graph.node[i].input[1] = name
        if not changed:
            break
    dim0 = _inferred_dim0(probe)
    exported = {o.name: _dims(o)[0] if o.type.tensor_type.shape.dim else None for o in proto.graph.output}
    olds = {old for old, _ in rebatched.values()}
    for name, first in exported.items():
        now = dim0.get(name)
        if first in olds and isinstance(now, int) and now == first:
            raise SqueezeError(
                f"cannot change the batch of {', '.join(sorted(rebatched))}: output '{name}' keeps batch {first} "
                "(a batch hard-coded in the graph): re-export the model with a dynamic batch axis")
    return out


def prepare_onnx(
    model: ModelLike, input_shapes: Mapping[str, Sequence[int]] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[onnx.ModelProto, list[TensorSpec]]:
    """``model`` as the Relax importer takes it, with its input specs: static input shapes,
    shape computations folded, ConvTranspose and recurrent ops decomposed, weights as
    initializers (a copy; ``model`` is left unchanged). Arguments as :func:`import_onnx`."""
    proto = load_onnx(model)
    inputs, rebatched = _input_specs(proto, input_shapes or {}, log)
    proto = fold_shapes(follow_batch(proto, rebatched), {s.name: s.shape for s in inputs})
    shapes = static_shapes(proto)
    check_attributes(proto, constants(proto.graph), shapes)
    return split_weights_and_constants(decompose_recurrent(decompose_conv_transpose(proto, shapes), shapes)), inputs


def import_onnx(
    model: ModelLike, input_shapes: Mapping[str, Sequence[int]] | None = None,
    log: Callable[[str], None] | None = None,
) -> Program:
    """Import an ONNX model as a :class:`Program`.

    Parameters
    ----------
    model : str, PathLike or onnx.ModelProto
        The model to import.
    input_shapes : dict, optional
        Static shapes, e.g. ``{"input": (1, 3, 224, 224)}``: they fix dynamic dims and may change
        the batch (first) dim of a static input (Reshapes hard-coding the batch follow it).
    log : callable, optional
        Receives one line per dynamic batch dim fixed to 1 by default.

    Returns
    -------
    Program
        Relax module with weights detached into ``Program.params``.
    """
    return import_prepared(*prepare_onnx(model, input_shapes, log))


def import_prepared(proto: onnx.ModelProto, inputs: Sequence[TensorSpec]) -> Program:
    """The :class:`Program` of a model :func:`prepare_onnx` returned, with its input specs."""
    try:  # the importer prints each failing node and IR dumps itself: the error line says it all
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            mod = from_onnx(
                proto,
                shape_dict={s.name: list(s.shape) for s in inputs},
                dtype_dict={s.name: s.dtype for s in inputs},
                keep_params_in_input=True,
            )
    except Exception as err:
        raise SqueezeError(f"ONNX import failed: {str(err).strip().splitlines()[-1]}") from None
    mod, detached = relax.frontend.detach_params(_nonnegative_squeeze_axes(mod))
    mod = _attach_layer_names(mod, proto)
    main = mod["main"]
    num_inputs = len(inputs)
    params = {
        var.name: arr.numpy()
        for var, arr in zip(main.params[num_inputs:], detached.get("main", []))
    }
    outputs = _output_specs(main, [o.name for o in proto.graph.output])
    return Program(mod, params, inputs, outputs)


def _nonnegative_squeeze_axes(mod: tvm.IRModule) -> tvm.IRModule:
    """``R.squeeze`` with its axes made non-negative: the importer keeps ONNX's ``axes=[-1]``,
    on which TVM 0.27's ``ConvertLayout`` dies with ``std::bad_alloc`` (any model, conv or not)."""
    main, values = mod["main"], {}
    for binding in bindings(main):
        call = binding.value
        if op_name(call) == "relax.squeeze" and call.attrs.axis is not None and any(int(a) < 0 for a in call.attrs.axis):
            ndim = len(call.args[0].ty.shape)
            values[binding.var] = relax.op.squeeze(call.args[0], [int(a) % ndim for a in call.attrs.axis])
    return with_main(mod, rebind(main, values)) if values else mod


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
