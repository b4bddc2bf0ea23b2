"""Which ONNX node produced each binding of an imported Program's ``main``.

Pruning decides on the Relax IR and edits the ONNX model (then re-imports it), so both must
agree on names: weights share their initializer names, and ops are matched here by tracing the
same import that :func:`compiler.frontend.import_onnx` performs, on the model as
:func:`compiler.frontend.prepare_onnx` made it (shapes folded, weights as initializers).
"""
from __future__ import annotations

import onnx
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

from compiler.program import Program


def initializer_names(proto: onnx.ModelProto) -> dict[str, str]:
    """Relax parameter name → ONNX initializer name (the importer drops an ``onnx::`` prefix)."""
    return {t.name.removeprefix("onnx::"): t.name for t in proto.graph.initializer}


def _traced_import(proto: onnx.ModelProto, program: Program) -> tuple[relax.Function, list[tuple[str, relax.Expr]]]:
    """Import ``proto`` as :func:`compiler.frontend.import_onnx` does, and return ``main`` with,
    per ONNX node in order, its name and the expression the importer converted it to.

    This is the only place that touches a TVM private API: it overrides
    ``ONNXGraphImporter._convert_operator``, the one hook that sees each node's name next to
    its result. The alternatives are worse: the importer attaches no spans or node names to
    bindings; declaring every node output a graph output changes what is emitted (converters
    return unbound calls, which the output tuple would bind a second time); importing each node
    prefix separately costs one import per node. :func:`node_names` checks that the traced
    import lines up with ``program`` binding for binding and returns an empty map otherwise, so
    a change of this private method shows up as a missing mapping, never as a wrong one.
    """
    converted: list[tuple[str, relax.Expr]] = []

    class Tracing(ONNXGraphImporter):
        def _convert_operator(self, op_name, inputs, attrs, opset):
            sym = super()._convert_operator(op_name, inputs, attrs, opset)
            converted.append((attrs["tvm_custom"]["name"], sym))
            return sym

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    importer = Tracing({s.name: list(s.shape) for s in program.inputs},
                       {s.name: s.dtype for s in program.inputs}, keep_params_in_input=True)
    return relax.frontend.detach_params(importer.from_onnx(proto.graph, opset))[0]["main"], converted


def _op_names(func: relax.Function) -> list[str]:
    return [str(getattr(getattr(b.value, "op", None), "name", type(b.value).__name__))
            for blk in func.body.blocks for b in blk.bindings]


def node_names(proto: onnx.ModelProto, program: Program) -> dict[int, str]:
    """Binding position in ``program.mod["main"]`` → name of the ONNX node it belongs to.

    A binding belongs to the node whose result it is or, for helper bindings a converter emits
    (the conv2d under a Conv's bias add, a transposed Gemm weight), to the first node whose
    result is computed from it. Returns an empty dict when the traced import does not line up
    with ``program``.
    """
    traced, converted = _traced_import(proto, program)
    if _op_names(traced) != _op_names(program.mod["main"]):
        return {}
    bindings = [b for blk in traced.body.blocks for b in blk.bindings]
    position = {b.var: i for i, b in enumerate(bindings)}
    results: list[tuple[str, list[int]]] = []
    owner: dict[int, str] = {}
    for name, sym in converted:
        exprs = sym.fields if isinstance(sym, relax.Tuple) else [sym]
        hits = [i for i, b in enumerate(bindings)
                if i not in owner and any(b.value.same_as(e) or b.var.same_as(e) for e in exprs)]
        owner.update({i: name for i in hits})
        results.append((name, hits))
    for name, hits in results:  # helper bindings belong to the node whose result uses them
        stack = list(hits)
        while stack:
            value = bindings[stack.pop()].value
            args = [value.tuple_value] if isinstance(value, relax.TupleGetItem) else getattr(value, "args", [])
            for arg in args:
                for expr in (arg.fields if isinstance(arg, relax.Tuple) else [arg]):
                    j = position.get(expr)
                    if j is not None and j not in owner:
                        owner[j] = name
                        stack.append(j)
    for i, b in enumerate(bindings):  # fields the importer unpacks from a tuple-valued op
        if isinstance(b.value, relax.TupleGetItem) and position.get(b.value.tuple_value) in owner:
            owner.setdefault(i, owner[position[b.value.tuple_value]])
    return owner


def node_outputs(proto: onnx.ModelProto, program: Program) -> dict[str, list[int | str | None]]:
    """ONNX node name → where each of its results is held in ``program.mod["main"]``: a binding
    position, the name of a model input the node passes through (Identity, Dropout), or None.

    Same traced import as :func:`node_names`; empty when it does not line up with ``program``.
    """
    traced, converted = _traced_import(proto, program)
    if _op_names(traced) != _op_names(program.mod["main"]):
        return {}
    bindings = [b for blk in traced.body.blocks for b in blk.bindings]
    params = {p: getattr(p, "name", None) or p.name_hint for p in traced.params}
    out: dict[str, list[int | str | None]] = {}
    for name, sym in converted:
        where = []
        for expr in (sym.fields if isinstance(sym, relax.Tuple) else [sym]):
            hit = next((i for i, b in enumerate(bindings) if b.var.same_as(expr) or b.value.same_as(expr)), None)
            where.append(hit if hit is not None else params.get(expr))
        out[name] = where
    return out
