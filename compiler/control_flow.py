"""Inline ONNX ``If`` nodes whose condition is known when compiling.

Exporters emit ``If`` for checks that static shapes decide: PyTorch's ``x.dim() == 1``
squeezes, the rank tests around ``nn.LSTM`` state, a sample-rate branch on a shape. Once
:func:`compiler.fold_shapes.fold_shapes` has made the condition a constant, the taken branch
replaces the node: its nodes move into the parent graph in the If's place (which comes after
every outer value the branch reads), the names they define get the prefix ``<If name>/<branch>/``
so that two inlined branches cannot collide, and the branch outputs take the If's output names.
Nested Ifs come along and are inlined in a later folding round, once their conditions fold too.
An If whose condition stays a run-time value cannot become a static graph: see
:func:`check_conditions`.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import helper

from .errors import SqueezeError


def _rename_inputs(graph: onnx.GraphProto, rename: Mapping[str, str]) -> None:
    """Rename, in ``graph`` and its subgraphs, the uses of outer names ``rename`` maps."""
    local = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer} \
        | {i.name for i in graph.input}
    outer = {k: v for k, v in rename.items() if k not in local}
    for node in graph.node:
        node.input[:] = [outer.get(i, i) for i in node.input]
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                _rename_inputs(sub, outer)
    for value in graph.output:
        value.name = outer.get(value.name, value.name)


def inline_if(node: onnx.NodeProto, condition: np.ndarray) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and initializers that replace ``node`` when its condition is ``condition``."""
    which = "then_branch" if bool(np.asarray(condition).reshape(-1)[0]) else "else_branch"
    branch = onnx.GraphProto()
    branch.CopyFrom(next(a.g for a in node.attribute if a.name == which))
    prefix = f"{node.name or node.output[0]}/{which.split('_')[0]}/"
    rename = {name: prefix + name for name in
              [o for n in branch.node for o in n.output if o] + [t.name for t in branch.initializer]}
    copies = []  # outputs that are outer values, or a branch value given twice, need an Identity
    for value, target in zip(branch.output, node.output):
        if target and rename.get(value.name, "").startswith(prefix):
            rename[value.name] = target
        elif target:
            copies.append((value.name, target))
    for n in branch.node:
        n.output[:] = [rename.get(o, o) for o in n.output]
        if n.name:
            n.name = prefix + n.name
    for t in branch.initializer:
        t.name = rename[t.name]
    _rename_inputs(branch, rename)
    nodes = list(branch.node)
    nodes += [helper.make_node("Identity", [rename.get(src, src)], [dst], name=f"{prefix}{dst}") for src, dst in copies]
    return nodes, list(branch.initializer)


def check_conditions(graph: onnx.GraphProto) -> None:
    """Raise on the first If left in ``graph`` (its condition is a run-time value), naming the
    graph inputs the condition depends on."""
    producer = {o: n for n in graph.node for o in n.output}
    inputs = {i.name for i in graph.input}
    for node in graph.node:
        if node.op_type != "If":
            continue
        seen, todo = set(), [node.input[0]]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += [i for i in getattr(producer.get(name), "input", []) if i]
        depends = ", ".join(f"'{d}'" for d in sorted(seen & inputs)) or "none"
        raise SqueezeError(
            f"If '{node.name or node.output[0]}': its condition is computed at run time (from the values of "
            f"inputs: {depends}), so no branch can be chosen when compiling: re-export the model with the "
            "branch fixed (e.g. trace it for the inputs you will use)")
