"""How each Relax op relates the channel axes of its inputs and outputs.

A rule receives the :class:`~passes.prune.depgraph.Tracer` and one binding, and declares
relations between *slots* (a value and one of its axes):

``tie(a, b)``
    the two axes index the same channels (pruning one prunes the other);
``derive(fine, kind, parts)``
    ``fine`` is the row-major ``"product"`` or the ``"concat"`` of the ``parts``;
``barrier(slot, reason)``
    the axis must keep all its channels (spatial axes, normalized axes, graph I/O, ...).

Ops without a rule are barriers on every axis of their inputs and result, reported by name.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from tvm import relax

if TYPE_CHECKING:  # pragma: no cover
    from .tracer import Tracer

Rule = Callable[["Tracer", int, relax.Var, relax.Call], None]
RULES: dict[str, Rule] = {}

UNARY = (
    "relax.nn.relu", "relax.nn.relu6", "relax.nn.gelu", "relax.nn.gelu_tanh", "relax.nn.silu",
    "relax.nn.leakyrelu", "relax.nn.selu", "relax.nn.softplus", "relax.sigmoid", "relax.tanh", "relax.erf",
    "relax.exp", "relax.log", "relax.sqrt", "relax.rsqrt", "relax.negative", "relax.abs", "relax.clip",
    "relax.astype", "relax.square", "relax.round", "relax.floor", "relax.ceil", "relax.sign", "relax.sin",
    "relax.cos", "relax.hard_sigmoid", "relax.hard_swish", "relax.nn.hard_swish",
)
BINARY = {
    "relax.add": "bias", "relax.subtract": "bias", "relax.multiply": "scale", "relax.divide": "scale",
    "relax.maximum": "other", "relax.minimum": "other", "relax.power": "other", "relax.where": "other",
}
REDUCE = ("relax.mean", "relax.sum", "relax.max", "relax.min", "relax.prod", "relax.variance", "relax.std")
POOL = ("relax.nn.max_pool1d", "relax.nn.max_pool2d", "relax.nn.max_pool3d", "relax.nn.avg_pool1d",
        "relax.nn.avg_pool2d", "relax.nn.avg_pool3d", "relax.nn.adaptive_avg_pool1d",
        "relax.nn.adaptive_avg_pool2d", "relax.nn.adaptive_avg_pool3d", "relax.image.resize2d")
CONV = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d")


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the rule for the Relax ops ``names``."""

    def wrap(fn: Rule) -> Rule:
        for name in names:
            RULES[name] = fn
        return fn

    return wrap


@rule(*UNARY)
def _unary(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    t.tie_all(call.args[0], var)


@rule(*BINARY)
def _broadcast(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    out = t.shape(var)
    for arg in call.args:
        shape = t.shape(arg)
        if shape is None:  # PrimValue and friends carry no channels
            continue
        for i, size in enumerate(shape):
            j = len(out) - len(shape) + i
            if size == out[j]:
                t.tie(t.slot(arg, i), t.slot(var, j))
                t.role(arg, i, BINARY[call.op.name], idx)


@rule("relax.call_tir")
def _call_tir(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    """Element-wise TE kernels the importer emits (e.g. Clip's maximum/minimum): operands of the
    result's shape share its axes, 0-d operands are scalars. Anything else is opaque."""
    func = t.mod[call.args[0]] if call.args[0] in t.mod.get_global_vars() else None
    pattern = int((func.attrs or {}).get("op_pattern", -1)) if func is not None else -1
    out = t.shape(var)
    operands = [t.shape(a) for a in call.args[1].fields]
    if not 0 <= pattern <= 1 or out is None or any(s not in ((), out) for s in operands):
        return t.opaque(idx, var, call, "kernel that is not element-wise")
    for arg, shape in zip(call.args[1].fields, operands):
        if shape:
            t.tie_all(arg, var)


@rule(*CONV)
def _conv(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    data, weight = call.args
    attrs = call.attrs
    dl, kl, ol = str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout or attrs.data_layout)
    c, o, i = dl.index("C"), kl.index("O"), kl.index("I")
    for layout, value in ((dl, data), (kl, weight), (ol, var)):
        for axis, dim in enumerate(layout):
            if dim not in "NCOI":
                t.barrier(t.slot(value, axis), "spatial axis")
    t.tie(t.slot(data, dl.index("N")), t.slot(var, ol.index("N")))
    t.tie(t.slot(weight, o), t.slot(var, ol.index("C")))
    t.role(weight, o, "out", idx)
    t.role(weight, i, "in", idx)
    groups = int(attrs.groups)
    if groups == 1:
        t.tie(t.slot(data, c), t.slot(weight, i))
    else:  # channels = (group, channel within group), row-major
        g, per_group = t.virtual(idx, 0, groups), t.virtual(idx, 1, t.shape(weight)[o] // groups)
        t.derive(t.slot(data, c), "product", [g, t.slot(weight, i)])
        t.derive(t.slot(var, ol.index("C")), "product", [g, per_group])
        t.conv_groups[idx] = g
    t.layer(idx, var, call, data, weight, in_axis=i, out_axis=o, k_slot=t.slot(weight, i))


@rule("relax.matmul")
def _matmul(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    a, b = call.args
    sa, sb, so = t.shape(a), t.shape(b), t.shape(var)
    if len(sa) < 2 or len(sb) < 2:
        return t.opaque(idx, var, call, "vector matmul")
    t.tie(t.slot(a, len(sa) - 1), t.slot(b, len(sb) - 2))
    t.tie(t.slot(a, len(sa) - 2), t.slot(var, len(so) - 2))
    t.tie(t.slot(b, len(sb) - 1), t.slot(var, len(so) - 1))
    for arg, shape in ((a, sa), (b, sb)):
        for i, size in enumerate(shape[:-2]):
            j = len(so) - len(shape) + i
            if size == so[j]:
                t.tie(t.slot(arg, i), t.slot(var, j))
    k_slot = t.slot(a, len(sa) - 1)
    if t.origin(b, 0) is not None:
        t.role(b, len(sb) - 1, "out", idx)
        t.role(b, len(sb) - 2, "in", idx)
        t.layer(idx, var, call, a, b, in_axis=len(sb) - 2, out_axis=len(sb) - 1, k_slot=k_slot)
    else:
        t.macs(idx, var, k_slot, math.prod(so) * sa[-1])


@rule("relax.nn.batch_norm")
def _batch_norm(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    data, *stats = call.args
    axis = int(call.attrs.axis) % len(t.shape(data))
    t.tie_all(data, t.field(var, 0))
    for arg, role in zip(stats, ("bn_weight", "bn_bias", "bn_mean", "bn_var")):
        t.tie(t.slot(arg, 0), t.slot(data, axis))
        t.role(arg, 0, role, idx)
    t.batch_norms[idx] = (data, axis, [t.origin(s, 0) for s in stats])


@rule("relax.nn.layer_norm", "relax.nn.rms_norm", "relax.nn.group_norm")
def _norm(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    data = call.args[0]
    rank = len(t.shape(data))
    if call.op.name == "relax.nn.group_norm":
        axes = {int(call.attrs.channel_axis) % rank, *(int(a) % rank for a in call.attrs.axes)}
    else:
        axes = {int(a) % rank for a in call.attrs.axes}
    t.tie_all(data, var)
    for axis in axes:
        t.barrier(t.slot(data, axis), f"normalized by {call.op.name.split('.')[-1]}")
    for arg in call.args[1:]:
        for i in range(len(t.shape(arg) or ())):
            t.barrier(t.slot(arg, i), "normalization parameter")


@rule(*POOL)
def _pool(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    layout = str(call.attrs.layout)
    out_layout = str(getattr(call.attrs, "out_layout", None) or layout)
    data = call.args[0]
    for dim in "NC":
        t.tie(t.slot(data, layout.index(dim)), t.slot(var, out_layout.index(dim)))
    for lay, value in ((layout, data), (out_layout, var)):
        for axis, dim in enumerate(lay):
            if dim not in "NC":
                t.barrier(t.slot(value, axis), "spatial axis")


@rule(*REDUCE)
def _reduce(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    data = call.args[0]
    rank = len(t.shape(data))
    axes = set(range(rank)) if call.attrs.axis is None else {int(a) % rank for a in call.attrs.axis}
    kept = [a for a in range(rank) if a not in axes]
    for axis in axes:
        t.barrier(t.slot(data, axis), f"reduced by {call.op.name.split('.')[-1]}")
    if call.attrs.keepdims:
        for axis in axes:
            t.barrier(t.slot(var, axis), "reduced axis")
        kept_out = kept
    else:
        kept_out = list(range(len(kept)))
    for i, j in zip(kept, kept_out):
        t.tie(t.slot(data, i), t.slot(var, j))


@rule("relax.nn.softmax", "relax.nn.log_softmax")
def _softmax(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    data = call.args[0]
    t.tie_all(data, var)
    t.barrier(t.slot(data, int(call.attrs.axis) % len(t.shape(data))), "softmax axis")


@rule("relax.permute_dims")
def _permute(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    data = call.args[0]
    rank = len(t.shape(data))
    axes = list(range(rank))[::-1] if call.attrs.axes is None else [int(a) for a in call.attrs.axes]
    for j, i in enumerate(axes):
        t.tie(t.slot(data, i), t.slot(var, j))
        t.view(var, j, data, i)


@rule("relax.squeeze", "relax.expand_dims", "relax.reshape", "relax.flatten")
def _reshape(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    data = call.args[0]
    chunks = reshape_chunks(t.shape(data), t.shape(var))
    if chunks is None:
        return t.opaque(idx, var, call, "reshape mixing axes")
    for ins, outs in chunks:
        if len(ins) == 1 and len(outs) == 1:
            t.tie(t.slot(data, ins[0]), t.slot(var, outs[0]))
            t.view(var, outs[0], data, ins[0])
        elif len(ins) == 1:
            t.derive(t.slot(data, ins[0]), "product", [t.slot(var, o) for o in outs])
        elif len(outs) == 1:
            t.derive(t.slot(var, outs[0]), "product", [t.slot(data, i) for i in ins])
        else:
            for i in ins:
                t.barrier(t.slot(data, i), "reshape mixing axes")
            for o in outs:
                t.barrier(t.slot(var, o), "reshape mixing axes")
    if call.op.name == "relax.reshape":
        t.reshapes.append(idx)


@rule("relax.concat")
def _concat(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    parts = t.tuple_fields(call.args[0])
    rank = len(t.shape(var))
    axis = int(call.attrs.axis) % rank
    for part in parts:
        for i in range(rank):
            if i != axis:
                t.tie(part[i], t.slot(var, i))
    t.derive(t.slot(var, axis), "concat", [part[axis] for part in parts])


@rule("relax.split")
def _split(t: "Tracer", idx: int, var: relax.Var, call: relax.Call) -> None:
    data = call.args[0]
    rank = len(t.shape(data))
    axis = int(call.attrs.axis) % rank
    fields = [t.field(var, k) for k in range(len(var.ty.fields))]
    for field in fields:
        for i in range(rank):
            if i != axis:
                t.tie(t.slot(data, i), field[i])
    t.derive(t.slot(data, axis), "concat", [field[axis] for field in fields])
    t.splits[idx] = axis


def reshape_chunks(ins: tuple[int, ...], outs: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input and output axes whose sizes multiply to the same number.

    Size-1 axes are left out. Returns ``[(input axes, output axes), ...]`` or None when the
    sizes do not line up.
    """
    a = [i for i, s in enumerate(ins) if s != 1]
    b = [j for j, s in enumerate(outs) if s != 1]
    chunks, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        ci, co = [a[i]], [b[j]]
        pi, po = ins[a[i]], outs[b[j]]
        i, j = i + 1, j + 1
        while pi != po:
            if pi < po and i < len(a):
                ci.append(a[i])
                pi *= ins[a[i]]
                i += 1
            elif po < pi and j < len(b):
                co.append(b[j])
                po *= outs[b[j]]
                j += 1
            else:
                return None
        chunks.append((ci, co))
    return chunks if i == len(a) and j == len(b) else None
