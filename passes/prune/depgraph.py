"""Channel dependency graph of a Relax program whose weights are still parameters.

Nodes are *slots*: one axis of one value (a weight parameter named after its ONNX initializer,
an op result, a tuple field, or a virtual axis such as the group index of a grouped conv).
Edges tie slots that index the same channels; the connected components are channel spaces.
Some spaces are *derived* from others: a flatten is the row-major product of its input axes,
a concat the concatenation of its parts. Spaces derived from nothing are the prunable
*groups*; removing a channel of a group removes the matching rows of every weight slice in
the group and in the spaces derived from it. Ops without a rule are barriers: their axes keep
all channels and are reported by name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import networkx as nx
import numpy as np
import tvm
from tvm import relax

from .tracer import Layer, Slot, Tracer

Plan = Mapping[int, np.ndarray]


@dataclass(frozen=True)
class Member:
    """Rows of one weight that belong to a group: ``index[c]`` are the positions along
    ``axis`` of ``param`` removed with group channel ``c``."""

    param: str
    axis: int
    index: np.ndarray
    role: str
    layer: str


@dataclass(frozen=True)
class Probe:
    """An activation of the group feeding ``layer``: ``index[c]`` are its positions along
    ``axis`` for group channel ``c``."""

    var: relax.Var
    axis: int
    index: np.ndarray
    layer: Layer


@dataclass
class Group:
    """Channels that must be pruned together."""

    id: int
    name: str
    size: int
    members: list[Member]
    probes: list[Probe]
    direct: bool

    def slices(self, params: Mapping[str, np.ndarray], roles: tuple[str, ...]) -> list[np.ndarray]:
        """Per member with a role in ``roles``: its weights as ``(channels, values)``."""
        out = []
        for m in self.members:
            if m.role in roles:
                w = np.moveaxis(params[m.param], m.axis, 0)
                out.append(w[m.index].reshape(self.size, -1))
        return out


class DepGraph:
    """Prunable channel groups of a Program and what pruning them changes.

    Build with :func:`build_depgraph`. A *plan* maps group ids to the sorted channel
    indices kept.
    """

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.comp: dict[Slot, int] = {}
        self.comp_size: list[int] = []
        self.maps: list[dict[int, np.ndarray]] = []
        self.barrier_reason: dict[int, str] = {}
        self._gid_comp: dict[int, int] = {}
        self._components()
        self.groups: list[Group] = self._groups()
        self.layers = tracer.layers
        self._link_layers()

    # ---- structure ----------------------------------------------------------------
    def _components(self) -> None:
        t = self.tracer
        for cid, slots in enumerate(nx.connected_components(t.graph)):
            sizes = {t.sizes[s] for s in slots}
            for s in slots:
                self.comp[s] = cid
            self.comp_size.append(sizes.pop())
            if sizes:  # a rule tied axes of different sizes: never prune them
                self.barrier_reason[cid] = "inconsistent sizes"
        for s, reason in t.barriers.items():
            self.barrier_reason.setdefault(self.comp[s], reason)
        deriv: dict[int, tuple[str, tuple[int, ...]]] = {}
        dag = nx.DiGraph()
        for fine, kind, parts in t.derived:
            f, ps = self.comp[fine], tuple(self.comp[p] for p in parts)
            if deriv.setdefault(f, (kind, ps)) != (kind, ps) or f in ps:
                for c in (f, *ps, *deriv[f][1]):
                    self.barrier_reason[c] = "conflicting reshapes"
            dag.add_edges_from((p, f) for p in ps)
        if not nx.is_directed_acyclic_graph(dag):
            for c in dag.nodes:
                self.barrier_reason[c] = "cyclic reshapes"
            deriv = {}
        order = [c for c in nx.topological_sort(dag)] if deriv else []
        for c in reversed(order):  # a kept derived space keeps all its parts
            if c in self.barrier_reason and c in deriv:
                for p in deriv[c][1]:
                    self.barrier_reason.setdefault(p, self.barrier_reason[c])
        self.maps = [{c: np.arange(n)[:, None]} if c not in deriv else {} for c, n in enumerate(self.comp_size)]
        for c in order:
            if c not in deriv:
                continue
            kind, parts = deriv[c]
            for pos, p in enumerate(parts):
                part_map = self._part_map(kind, [self.comp_size[q] for q in parts], pos)
                for g, m in self.maps[p].items():
                    new = part_map[m].reshape(len(m), -1)
                    self.maps[c][g] = np.concatenate([self.maps[c][g], new], 1) if g in self.maps[c] else new

    @staticmethod
    def _part_map(kind: str, sizes: list[int], pos: int) -> np.ndarray:
        """``(sizes[pos], k)``: positions in the combined axis of each index of part ``pos``."""
        if kind == "concat":
            start = sum(sizes[:pos])
            return np.arange(start, start + sizes[pos])[:, None]
        grid = np.arange(math.prod(sizes)).reshape(sizes)
        return np.moveaxis(grid, pos, 0).reshape(sizes[pos], -1)

    def _groups(self) -> list[Group]:
        t = self.tracer
        by_group: dict[int, list[Member]] = {}
        direct: dict[int, bool] = {}
        for s, c in self.comp.items():
            if s[0] not in t.params:
                continue
            role, idx = t.roles.get(s, ("other", -1))
            for g, m in self.maps[c].items():
                by_group.setdefault(g, []).append(Member(s[0], s[1], m, role, t.name(idx) if idx >= 0 else s[0]))
                direct[g] = direct.get(g, False) or g == c
        first = {}  # group space -> earliest op giving it an "out" role (groups in graph order)
        for s, (role, idx) in t.roles.items():
            for g in self.maps[self.comp[s]] if role == "out" else ():
                first[g] = min(first.get(g, idx), idx)
        groups = []
        for g, members in sorted(by_group.items(), key=lambda kv: first.get(kv[0], -1)):
            outs = [m for m in members if m.role == "out"]
            if g in self.barrier_reason or self.comp_size[g] < 2 or not outs:
                continue
            members.sort(key=lambda m: (m.role != "out", m.param, m.axis))
            outs.sort(key=lambda m: t.roles[(m.param, m.axis)][1])
            layers = list(dict.fromkeys(m.layer for m in outs))
            name = layers[0] + (f" (+{len(layers) - 1})" if len(layers) > 1 else "")
            name += "" if direct[g] else f" [{self.comp_size[g]}x{outs[0].index.shape[1]}]"
            self._gid_comp[len(groups)] = g
            groups.append(Group(len(groups), name, self.comp_size[g], members, [], direct[g]))
        return groups

    def _link_layers(self) -> None:
        t = self.tracer
        comp_group = {c: gid for gid, c in self._gid_comp.items()}
        for layer in self.layers:
            data_slot = layer.k_slot if layer.op == "matmul" else t.slot(layer.data, str(layer.call.attrs.data_layout).index("C"))
            for g, m in self.maps[self.comp[data_slot]].items():
                if g in comp_group:
                    self.groups[comp_group[g]].probes.append(Probe(layer.data, data_slot[1], m, layer))
            users = t.users.get(layer.var, [])
            nxt = t.bindings[users[0]].value if len(users) == 1 else None
            var = layer.var
            if isinstance(nxt, relax.Call) and getattr(nxt.op, "name", "") == "relax.add":
                other = nxt.args[1] if nxt.args[0].same_as(var) else nxt.args[0]
                channel = len(t.shape(var)) - 1 if layer.op == "matmul" else 1
                axis = len(t.shape(other) or ()) - len(t.shape(var)) + channel
                origin = t.origin(other, axis) if axis >= 0 else None
                if origin is not None:
                    layer.bias = origin
                    var = t.bindings[users[0]].var
            users = t.users.get(var, [])
            if len(users) == 1 and users[0] in t.batch_norms:
                layer.batch_norm = users[0]

    @property
    def barriers(self) -> list[tuple[str, str]]:
        """Ops without a pruning rule, as ``(node name, reason)``."""
        return list(self.tracer.opaque_ops)

    # ---- effects of a plan --------------------------------------------------------
    def removed(self, plan: Plan) -> dict[int, np.ndarray]:
        """Per channel space touched by ``plan``: the sorted indices removed."""
        drop: dict[int, list[np.ndarray]] = {}
        for gid, kept in plan.items():
            g = self._gid_comp[gid]
            gone = np.setdiff1d(np.arange(self.comp_size[g]), kept)
            if not len(gone):
                continue
            for c, maps in enumerate(self.maps):
                if g in maps:
                    drop.setdefault(c, []).append(maps[g][gone].ravel())
        return {c: np.unique(np.concatenate(v)) for c, v in drop.items()}

    def new_size(self, s: Slot, removed: Mapping[int, np.ndarray]) -> int:
        c = self.comp.get(s)
        return self.tracer.sizes[s] if c is None else self.comp_size[c] - len(removed.get(c, ()))

    def param_kept(self, plan: Plan) -> dict[str, list[tuple[int, np.ndarray]]]:
        """``{param: [(axis, kept indices), ...]}`` for every weight that loses rows."""
        removed = self.removed(plan)
        out: dict[str, list[tuple[int, np.ndarray]]] = {}
        for s, c in self.comp.items():
            if s[0] in self.tracer.params and c in removed:
                out.setdefault(s[0], []).append((s[1], np.setdiff1d(np.arange(self.comp_size[c]), removed[c])))
        return out

    def macs(self, plan: Plan | None = None) -> int:
        """Multiply-accumulates of all conv/matmul ops after ``plan`` (before it when None)."""
        removed = self.removed(plan or {})
        total = 0
        for macs, out_slots, k_slot in self.tracer.mac_ops:
            scale = 1.0
            for s in [*out_slots, k_slot]:
                scale *= self.new_size(s, removed) / self.tracer.sizes[s]
            total += round(macs * scale)
        return total

    def value_shape(self, var: relax.Var, removed: Mapping[int, np.ndarray]) -> list[int]:
        """Shape of a (tensor-valued) binding after removing channels."""
        t = self.tracer
        return [self.new_size(t.slot(var, a), removed) for a in range(len(t.shape(var)))]


def build_depgraph(mod: tvm.IRModule, node_names: Mapping[int, str] | None = None) -> DepGraph:
    """Trace ``mod["main"]`` (weights as parameters) into a :class:`DepGraph`.

    Parameters
    ----------
    mod : tvm.IRModule
        ``Program.mod`` before ``bind_params``.
    node_names : dict, optional
        Binding position → ONNX node name, used in group names and barrier reports.
    """
    tracer = Tracer(mod, node_names or {})
    tracer.run()
    return DepGraph(tracer)
