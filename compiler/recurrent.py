"""Unroll ONNX ``LSTM`` and ``GRU`` over their static sequence length into primitive ONNX ops.

TVM 0.27's Relax ONNX importer has no LSTM, GRU or RNN converter (they are absent from its
convert map), and a Relax loop would hide the matmuls from the quantizer. With static shapes
the recurrence is a fixed chain instead, rewritten here before import (like
:mod:`compiler.conv_transpose`):

* the input projection of every step and direction is **one** MatMul ``X · [W_0ᵀ | W_1ᵀ] + b``
  over ``[seq, batch, input]`` (the largest layer, quantized and tuned like any other);
* each step adds its hidden projection ``H · Rᵀ`` (a MatMul on the shared weight) and applies
  the gates with Sigmoid / Tanh / Mul / Add, as the ONNX spec writes them: LSTM gates ``i, o, f, c``
  with optional peepholes ``P``; GRU gates ``z, r, h`` with ``linear_before_reset`` either way;
* ``direction`` forward, reverse or bidirectional; initial states given, absent or zero (a zero
  state skips its terms); ``layout`` 0 (``[seq, batch, ·]``) or 1 (``[batch, seq, ·]``);
* ``Y`` stacks the step outputs in time order, ``Y_h`` / ``Y_c`` hold each direction's last state.

What the spec allows beyond that (``clip``, other activations, ``input_forget``, per-sample
``sequence_lens``, weights computed at run time) is refused with one line naming the node.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import SqueezeError
from .fold_shapes import Names, constants, drop_unused

RECURRENT_OPS = ("LSTM", "GRU")
_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}
_GATES = {"LSTM": 4, "GRU": 3}
_DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}


def _bad(node: onnx.NodeProto, what: str, fix: str = "re-export it with the defaults") -> SqueezeError:
    return SqueezeError(f"{node.op_type} '{node.name or node.output[0]}': {what}: {fix}")


class _Emitter:
    """The nodes and initializers replacing one recurrent node, named under its name."""

    def __init__(self, base: str, opset: int):
        self.names, self.opset = Names(base), opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def op(self, op_type: str, inputs: list[str], what: str, out: str | None = None, **attrs) -> str:
        out = out or self.names.new(what)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def const(self, array: np.ndarray, what: str) -> str:
        name = self.names.new(what)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def split(self, x: str, sizes: list[int], axis: int, what: str) -> list[str]:
        outs = [self.names.new(what) for _ in sizes]
        if self.opset >= 13:  # `split` became an input in opset 13
            node = helper.make_node("Split", [x, self.const(np.array(sizes, np.int64), "sizes")], outs, outs[0],
                                    axis=axis)
        else:
            node = helper.make_node("Split", [x], outs, outs[0], axis=axis, split=sizes)
        self.nodes.append(node)
        return outs


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _attrs(node: onnx.NodeProto) -> dict:
    """The node's attributes, strings decoded."""
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: [_text(x) for x in v] if isinstance(v, list) else _text(v) for k, v in values.items()}


def _check(node: onnx.NodeProto, attrs: dict, values: Mapping[str, np.ndarray], steps: int) -> tuple[bool, ...]:
    """The directions' ``reverse`` flags, after refusing what this rewrite does not implement."""
    directions = _DIRECTIONS.get(attrs.get("direction", "forward"))
    if directions is None:
        raise _bad(node, f"direction '{attrs['direction']}' is not forward, reverse or bidirectional",
                   "fix the exporter's attributes")
    given = [a.lower() for a in attrs.get("activations", [])]
    if given and given != _ACTIVATIONS[node.op_type] * len(directions):
        raise _bad(node, f"activations {attrs['activations']} are not supported (only the defaults "
                         f"{'/'.join(_ACTIVATIONS[node.op_type])})")
    for name in ("clip", "activation_alpha", "activation_beta"):
        if name in attrs:
            raise _bad(node, f"attribute '{name}' is not supported")
    if attrs.get("input_forget", 0):
        raise _bad(node, "input_forget=1 is not supported")
    if attrs.get("layout", 0) not in (0, 1):
        raise _bad(node, f"layout={attrs['layout']} is not 0 or 1", "fix the exporter's attributes")
    for i, what in ((1, "W"), (2, "R"), (3, "B"), (7, "P")):
        if i < len(node.input) and node.input[i] and node.input[i] not in values:
            raise _bad(node, f"its weight {what} ('{node.input[i]}') is computed at run time",
                       "export the model with constant weights")
    lens = node.input[4] if len(node.input) > 4 else ""
    if lens and (lens not in values or np.any(values[lens] != steps)):
        raise _bad(node, f"sequence_lens '{lens}' is not the full length {steps} of every sample",
                   "export the model without sequence_lens (pad the batch to one length)")
    return directions


def _states(e: _Emitter, name: str, values: Mapping[str, np.ndarray], count: int, layout: int) -> list[str | None]:
    """An initial state ``[dirs, batch, hidden]`` split per direction (``[1, batch, hidden]``);
    None for an absent or all-zero one."""
    if not name or (name in values and not np.any(values[name])):
        return [None] * count
    if layout:
        name = e.op("Transpose", [name], "state", perm=[1, 0, 2])
    return e.split(name, [1] * count, 0, "state") if count > 1 else [name]


def _lstm_step(e: _Emitter, x: str, h: str | None, c: str | None, w: Mapping[str, str],
               hidden: int) -> tuple[str, str]:
    """One LSTM step: ``x`` the projected input ``[1, batch, 4·hidden]``; ``w``: ``r`` = ``Rᵀ``
    and, with peepholes, ``p_i``, ``p_o``, ``p_f``."""
    gates = x if h is None else e.op("Add", [x, e.op("MatMul", [h, w["r"]], "hidden_proj")], "gates")
    i, o, f, g = e.split(gates, [hidden] * 4, 2, "gate")
    if "p_i" in w and c is not None:
        i = e.op("Add", [i, e.op("Mul", [c, w["p_i"]], "peep")], "gate")
        f = e.op("Add", [f, e.op("Mul", [c, w["p_f"]], "peep")], "gate")
    new_c = e.op("Mul", [e.op("Sigmoid", [i], "i"), e.op("Tanh", [g], "g")], "ig")
    if c is not None:
        new_c = e.op("Add", [e.op("Mul", [e.op("Sigmoid", [f], "f"), c], "fc"), new_c], "c")
    if "p_o" in w:
        o = e.op("Add", [o, e.op("Mul", [new_c, w["p_o"]], "peep")], "gate")
    return e.op("Mul", [e.op("Sigmoid", [o], "o"), e.op("Tanh", [new_c], "tanh_c")], "h"), new_c


def _gru_step(e: _Emitter, x: str, h: str | None, w: Mapping[str, str], hidden: int) -> str:
    """One GRU step: ``x`` the projected input ``[1, batch, 3·hidden]`` (all biases but the
    ``R_h`` one of ``linear_before_reset``); ``w``: ``r`` = ``Rᵀ``, ``rec_bias`` = ``[0, 0, Rb_h]``
    and ``rh_bias`` = ``Rb_h`` with linear_before_reset, else ``r_zr`` / ``r_h``, the columns of ``Rᵀ``."""
    x_zr, x_h = e.split(x, [2 * hidden, hidden], 2, "x")
    rec_zr = rec_h = None
    if "rec_bias" in w and h is None:
        rec_h = w["rh_bias"]
    elif "rec_bias" in w:  # h~ = tanh(x_h + r ⊙ (H·R_hᵀ + Rb_h))
        rec = e.op("Add", [e.op("MatMul", [h, w["r"]], "hidden_proj"), w["rec_bias"]], "rec")
        rec_zr, rec_h = e.split(rec, [2 * hidden, hidden], 2, "rec")
    elif h is not None:  # h~ = tanh(x_h + (r ⊙ H)·R_hᵀ)
        rec_zr = e.op("MatMul", [h, w["r_zr"]], "hidden_proj")
    zr = e.op("Sigmoid", [x_zr if rec_zr is None else e.op("Add", [x_zr, rec_zr], "zr")], "zr")
    z, reset = e.split(zr, [hidden, hidden], 2, "gate")
    if rec_h is not None:
        cand = e.op("Add", [x_h, e.op("Mul", [reset, rec_h], "rh")], "cand")
    else:
        cand = x_h if h is None else e.op(
            "Add", [x_h, e.op("MatMul", [e.op("Mul", [reset, h], "rh"), w["r_h"]], "hidden_proj")], "cand")
    cand = e.op("Tanh", [cand], "cand")
    delta = cand if h is None else e.op("Sub", [cand, h], "delta")
    return e.op("Sub", [cand, e.op("Mul", [z, delta], "zd")], "h")  # (1 - z) ⊙ h~ + z ⊙ H


def _join(e: _Emitter, parts: list[str], axis: int, perm: list[int] | None, out: str) -> str:
    """``parts`` concatenated along ``axis`` into ``out``, transposed by ``perm`` (layout 1)."""
    if len(parts) > 1:
        joined = e.op("Concat", parts, "join", out=None if perm else out, axis=axis)
    else:
        joined = parts[0] if perm else e.op("Identity", parts, "join", out=out)
    return e.op("Transpose", [joined], "out", out=out, perm=perm) if perm else joined


def _rewrite(node: onnx.NodeProto, values: Mapping[str, np.ndarray], shape: tuple[int, ...],
             opset: int) -> _Emitter:
    """The unrolled form of one LSTM/GRU ``node`` whose input ``X`` has the static ``shape``."""
    attrs, kind = _attrs(node), node.op_type
    layout = int(attrs.get("layout", 0))
    steps, batch = (shape[1], shape[0]) if layout else (shape[0], shape[1])
    directions = _check(node, attrs, values, steps)
    inputs = list(node.input) + [""] * (8 - len(node.input))
    w, r = values[inputs[1]], values[inputs[2]]
    count, gates = len(directions), _GATES[kind]
    hidden = int(attrs.get("hidden_size", r.shape[-1]))
    size = gates * hidden
    b = values[inputs[3]] if inputs[3] else np.zeros((count, 2 * size), w.dtype)
    p = values[inputs[7]] if inputs[7] else None
    if w.shape != (count, size, shape[2]) or r.shape != (count, size, hidden) or b.shape != (count, 2 * size) \
            or (p is not None and p.shape != (count, 3 * hidden)):
        raise _bad(node, f"W {list(w.shape)}, R {list(r.shape)}, B {list(b.shape)} do not fit hidden_size={hidden}, "
                         f"{count} direction(s) and input {list(shape)}", "fix the exporter's weights")
    lbr = kind == "GRU" and bool(attrs.get("linear_before_reset", 0))
    e = _Emitter(node.name or node.output[0], opset)
    x = e.op("Transpose", [inputs[0]], "x", perm=[1, 0, 2]) if layout else inputs[0]
    hoisted = b[:, :size] + b[:, size:] * (np.arange(size) < 2 * hidden if lbr else 1)  # Rb_h stays in the step
    proj = e.op("Add", [e.op("MatMul", [x, e.const(w.transpose(2, 0, 1).reshape(shape[2], -1), "w")], "input_proj"),
                        e.const(hoisted.reshape(-1), "input_bias")], "input_proj")
    per_direction = e.split(proj, [size] * count, 2, "proj") if count > 1 else [proj]
    h0 = _states(e, inputs[5], values, count, layout)
    c0 = _states(e, inputs[6], values, count, layout) if kind == "LSTM" else [None] * count
    ys, hs, cs = [], [], []
    for d, reverse in enumerate(directions):
        xs = e.split(per_direction[d], [1] * steps, 0, "step") if steps > 1 else per_direction[d:d + 1]
        if kind == "LSTM":
            weights = {"r": e.const(r[d].T, "r")}
            if p is not None:
                weights.update({k: e.const(v, "peephole") for k, v in zip(("p_i", "p_o", "p_f"), p[d].reshape(3, -1))})
        elif lbr:
            rb_h = b[d, size + 2 * hidden:]
            weights = {"r": e.const(r[d].T, "r"), "rh_bias": e.const(rb_h, "rh_bias"),
                       "rec_bias": e.const(np.concatenate([np.zeros(2 * hidden, b.dtype), rb_h]), "rec_bias")}
        else:
            weights = {"r_zr": e.const(r[d, :2 * hidden].T, "r"), "r_h": e.const(r[d, 2 * hidden:].T, "r")}
        h, c, outs = h0[d], c0[d], [""] * steps
        for t in reversed(range(steps)) if reverse else range(steps):
            if kind == "LSTM":
                h, c = _lstm_step(e, xs[t], h, c, weights, hidden)
            else:
                h = _gru_step(e, xs[t], h, weights, hidden)
            outs[t] = h
        ys.append(outs)
        hs.append(h)
        cs.append(c)
    y, y_h, y_c = (list(node.output) + ["", ""])[:3]
    if y:  # [seq, dirs, batch, hidden]
        stacked = [e.op("Concat", outs, "y", axis=0) if steps > 1 else outs[0] for outs in ys]
        shape_4d = e.names.const([steps, 1, batch, hidden], e.inits)
        _join(e, [e.op("Reshape", [part, shape_4d], "y") for part in stacked], 1, [2, 0, 1, 3] if layout else None, y)
    for out, last in ((y_h, hs), (y_c, cs)):
        if out:
            _join(e, last, 0, [1, 0, 2] if layout else None, out)
    return e


def decompose_recurrent(proto: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    """Unroll every LSTM and GRU node into primitive ONNX ops over its static sequence length.

    Parameters
    ----------
    proto : onnx.ModelProto
        The model, changed in place and returned.
    shapes : dict
        Static tensor shapes by name (from ONNX shape inference).

    Raises
    ------
    SqueezeError
        An attribute or input this rewrite does not support, or an input of unknown shape,
        naming the node.
    """
    graph = proto.graph
    values = constants(graph)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    nodes = []
    for node in graph.node:
        if node.op_type not in RECURRENT_OPS or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        if len(shapes.get(node.input[0], ())) != 3:
            raise _bad(node, f"the shape of its input '{node.input[0]}' is not static",
                       "give static input shapes (--input-shape)")
        emitted = _rewrite(node, values, shapes[node.input[0]], opset)
        nodes += emitted.nodes
        graph.initializer.extend(emitted.inits)
    graph.ClearField("node")
    graph.node.extend(nodes)
    drop_unused(graph)
    return proto
