"""Walk a Relax function and record channel slots and their relations (rules in ``rules.py``).

A *slot* is one axis of one value: a weight parameter (named after its ONNX initializer), an op
result, a tuple field, or a virtual axis such as the group index of a grouped conv.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import networkx as nx
import tvm
from tvm import relax

from .rules import RULES

Slot = tuple[str, int]


@dataclass
class Layer:
    """A conv or matmul with a weight parameter."""

    index: int
    name: str
    op: str
    var: relax.Var
    call: relax.Call
    data: relax.Expr
    weight: str
    in_axis: int
    out_axis: int
    macs: int
    out_slots: list[Slot]
    k_slot: Slot
    bias: tuple[str, int] | None = None
    batch_norm: int | None = None


class Tracer:
    """Collects slots and relations while walking ``main``; rules call its methods."""

    def __init__(self, mod: tvm.IRModule, node_names: Mapping[int, str]) -> None:
        self.graph = nx.Graph()
        self.sizes: dict[Slot, int] = {}
        self.derived: list[tuple[Slot, str, list[Slot]]] = []
        self.barriers: dict[Slot, str] = {}
        self.roles: dict[Slot, tuple[str, int]] = {}
        self.keys: dict[relax.Var, str] = {}
        self.params: set[str] = set()
        self.views: dict[Slot, Slot] = {}
        self.layers: list[Layer] = []
        self.mac_ops: list[tuple[int, list[Slot], Slot]] = []
        self.conv_groups: dict[int, Slot] = {}
        self.splits: dict[int, int] = {}
        self.reshapes: list[int] = []
        self.batch_norms: dict[int, tuple] = {}
        self.opaque_ops: list[tuple[str, str]] = []
        self.users: dict[relax.Var, list[int]] = {}
        self.bindings: list[relax.Binding] = []
        self.node_names = node_names
        self.mod = relax.transform.AnnotateTIROpPattern()(mod)
        self.func = mod["main"]

    # ---- values and slots -------------------------------------------------------------
    def shape(self, expr: relax.Expr) -> tuple[int, ...] | None:
        ty = getattr(expr, "ty", None)
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            return None
        return tuple(int(d) for d in ty.shape)

    def slot(self, expr: relax.Expr, axis: int) -> Slot | None:
        if not isinstance(expr, relax.Var) or expr not in self.keys:
            return None
        s = (self.keys[expr], axis)
        self._add(s, self.shape(expr)[axis])
        return s

    def field(self, var: relax.Var, k: int) -> list[Slot]:
        ty = var.ty.fields[k]
        slots = [(f"{self.keys[var]}#{k}", a) for a in range(len(ty.shape))]
        for s, d in zip(slots, ty.shape):
            self._add(s, int(d))
        return slots

    def tuple_fields(self, expr: relax.Expr) -> list[list[Slot]]:
        if isinstance(expr, relax.Tuple):
            return [[self.slot(f, a) for a in range(len(self.shape(f)))] for f in expr.fields]
        return [self.field(expr, k) for k in range(len(expr.ty.fields))]

    def virtual(self, idx: int, k: int, size: int) -> Slot:
        s = (f"v{idx}:virtual", k)
        self._add(s, size)
        return s

    def _add(self, s: Slot, size: int) -> None:
        if s not in self.sizes:
            self.sizes[s] = size
            self.graph.add_node(s)

    # ---- relations ----------------------------------------------------------------
    def tie(self, a: Slot | None, b: Slot | None) -> None:
        if a is not None and b is not None:
            self.graph.add_edge(a, b)
        elif (a or b) is not None:
            self.barrier(a or b, "tied to an inline constant")

    def tie_all(self, a: relax.Expr, b: relax.Var | list[Slot]) -> None:
        slots = b if isinstance(b, list) else [self.slot(b, i) for i in range(len(self.shape(b)))]
        for i, s in enumerate(slots):
            self.tie(self.slot(a, i), s)
            if not isinstance(b, list):
                self.view(b, i, a, i)

    def derive(self, fine: Slot | None, kind: str, parts: list[Slot | None]) -> None:
        if fine is None or None in parts:
            for s in [fine, *parts]:
                if s is not None:
                    self.barrier(s, "derived from an untracked value")
            return
        parts = [p for p in parts if self.sizes[p] != 1] if kind == "product" else parts
        if len(parts) == 1:
            self.tie(fine, parts[0])
        elif parts:
            self.derived.append((fine, kind, parts))

    def barrier(self, s: Slot | None, reason: str) -> None:
        if s is not None:
            self.barriers.setdefault(s, reason)

    def view(self, var: relax.Var, axis: int, src: relax.Expr, src_axis: int) -> None:
        origin = self.origin(src, src_axis)
        if origin is not None:
            self.views[(self.keys[var], axis)] = origin

    def origin(self, expr: relax.Expr, axis: int) -> Slot | None:
        """The weight slot that ``expr``'s axis is a pure view of (transpose, reshape), if any."""
        if not isinstance(expr, relax.Var) or expr not in self.keys:
            return None
        key = self.keys[expr]
        return (key, axis) if key in self.params else self.views.get((key, axis))

    def role(self, expr: relax.Expr, axis: int, role: str, idx: int) -> None:
        origin = self.origin(expr, axis)
        if origin is not None:
            self.roles.setdefault(origin, (role, idx))

    def layer(self, idx: int, var, call, data, weight, in_axis: int, out_axis: int, k_slot: Slot) -> None:
        w_shape, out = self.shape(weight), self.shape(var)
        macs = math.prod(out) * (math.prod(w_shape) // w_shape[out_axis] if "conv" in call.op.name
                                 else w_shape[in_axis])
        param, _ = self.origin(weight, 0)
        self.macs(idx, var, k_slot, macs)
        self.layers.append(Layer(idx, self.name(idx), call.op.name.split(".")[-1], var, call, data, param,
                                 self.origin(weight, in_axis)[1], self.origin(weight, out_axis)[1], macs,
                                 [self.slot(var, a) for a in range(len(out))], k_slot))

    def macs(self, idx: int, var: relax.Var, k_slot: Slot, macs: int) -> None:
        self.mac_ops.append((macs, [self.slot(var, a) for a in range(len(self.shape(var)))], k_slot))

    def opaque(self, idx: int, var: relax.Var, value: relax.Expr, reason: str) -> None:
        """Keep every channel of the op's operands and result; report it."""
        name = getattr(getattr(value, "op", None), "name", type(value).__name__)
        self.opaque_ops.append((self.name(idx), f"{name}: {reason}"))
        for arg in [*getattr(value, "args", []), var]:
            for expr in (arg.fields if isinstance(arg, relax.Tuple) else [arg]):
                shape = self.shape(expr)
                for i in range(len(shape or ())):
                    self.barrier(self.slot(expr, i), f"operand of {name}")

    def name(self, idx: int) -> str:
        return self.node_names.get(idx, f"binding {idx}")

    # ---- the walk -----------------------------------------------------------------
    def run(self) -> None:
        func = self.func
        num_input = int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs else 0
        for i, p in enumerate(func.params):
            self.keys[p] = p.name if i >= num_input else f"input:{p.name}"
            if i >= num_input:
                self.params.add(p.name)
            for a in range(len(self.shape(p) or ())):
                s = self.slot(p, a)
                if i < num_input:
                    self.barrier(s, "model input")
        for block in func.body.blocks:
            for binding in block.bindings:
                self._visit(len(self.bindings), binding)
                self.bindings.append(binding)
        ret = func.body.body
        for expr in (ret.fields if isinstance(ret, relax.Tuple) else [ret]):
            for a in range(len(self.shape(expr) or ())):
                self.barrier(self.slot(expr, a), "model output")

    def _visit(self, idx: int, binding: relax.Binding) -> None:
        var, value = binding.var, binding.value
        self.keys[var] = f"v{idx}"
        for arg in getattr(value, "args", []):
            for expr in (arg.fields if isinstance(arg, relax.Tuple) else [arg]):
                if isinstance(expr, relax.Var):
                    self.users.setdefault(expr, []).append(idx)
        if isinstance(value, relax.Var):
            return self.tie_all(value, var)
        if isinstance(value, relax.TupleGetItem) and isinstance(value.tuple_value, relax.Var):
            return self.tie_all(var, self.field(value.tuple_value, value.index)) if self.shape(var) else None
        if isinstance(value, relax.Tuple):
            for k, f in enumerate(value.fields):
                self.tie_all(f, self.field(var, k))
            return None
        tracked = [a for a in getattr(value, "args", []) for a in (a.fields if isinstance(a, relax.Tuple) else [a])
                   if isinstance(a, relax.Var) and self.shape(a)]
        if isinstance(value, relax.Call) and not tracked:  # computed from constants only
            for i in range(len(self.shape(var) or ())):
                self.barrier(self.slot(var, i), "computed constant")
            return None
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in RULES:
            if all(self.shape(a) is not None for a in value.args if isinstance(a, relax.Var)):
                return RULES[value.op.name](self, idx, var, value)
            return self.opaque(idx, var, value, "dynamic shape")
        return self.opaque(idx, var, value, "no pruning rule")
