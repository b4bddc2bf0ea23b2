"""Small helpers over Relax functions shared by passes."""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator


def bindings(func: relax.Function) -> list:
    """All bindings of ``func``'s body, in order."""
    return [b for block in func.body.blocks for b in block.bindings]


def user_inputs(func: relax.Function) -> list:
    """The parameters of ``func`` that are model inputs (the first ``num_input``; all without it)."""
    count = int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs else len(func.params)
    return list(func.params[:count])


def layer_names(func: relax.Function) -> list[str]:
    """ONNX names of ``func``'s conv/matmul layers in order (``squeeze.layer_names``; empty if unknown)."""
    return list(func.attrs["squeeze.layer_names"]) if func.attrs and "squeeze.layer_names" in func.attrs else []


def op_name(expr) -> str:
    """``relax.nn.conv2d`` for a call of that op, else ``""``."""
    return getattr(expr.op, "name", "") if isinstance(expr, relax.Call) else ""


def use_counts(func: relax.Function) -> tuple[dict, dict]:
    """How often each var is used, and (for each var) its last consuming binding (None: output)."""
    uses: dict = {}
    consumer: dict = {}

    def visit(expr, binding):
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1
            consumer[expr] = binding
        elif isinstance(expr, relax.Tuple):
            for f in expr.fields:
                visit(f, binding)
        elif isinstance(expr, relax.Call):
            for a in expr.args:
                visit(a, binding)
        elif isinstance(expr, relax.TupleGetItem):
            visit(expr.tuple_value, binding)

    for binding in bindings(func):
        visit(binding.value, binding)
    visit(func.body.body, None)
    return uses, consumer


def single_consumer(var: relax.Var, uses: dict, consumer: dict, ops: tuple[str, ...]):
    """The binding that alone consumes ``var`` if it calls one of ``ops``, else None."""
    binding = consumer.get(var) if uses.get(var, 0) == 1 else None
    return binding if binding is not None and op_name(binding.value) in ops else None


def rebind(func: relax.Function, values: dict) -> relax.Function:
    """``func`` with the values of the given bindings replaced (``{var: new expr}``)."""

    @mutator
    class _Rebind(PyExprMutator):
        def visit_var_binding_(self, binding):
            if binding.var in values:
                new = self.builder_.normalize(self.visit_expr(values[binding.var]))
                self.builder_.emit_normalized(relax.VarBinding(binding.var, new))
            else:
                super().visit_var_binding_(binding)

    return _Rebind().visit_expr(func)


LAYER_KINDS = ("conv2d", "grouped_conv2d", "depthwise_conv2d", "matmul")


def layer_kind(call) -> str:
    """What a layer call is, as targets declare it: one of :data:`LAYER_KINDS`, else ``""``.

    A conv2d is ``depthwise_conv2d`` when each group holds one input and one output channel
    (as far as its static shapes tell), ``grouped_conv2d`` for other groupings.
    """
    name = op_name(call)
    if name == "relax.matmul":
        return "matmul"
    if name != "relax.nn.conv2d":
        return ""
    groups = int(call.attrs.groups)
    if groups == 1:
        return "conv2d"
    data, weight = (getattr(a.ty, "shape", None) for a in call.args[:2])
    try:
        channels = int(data[str(call.attrs.data_layout).index("C")])
        outputs = int(weight[str(call.attrs.kernel_layout).index("O")])
    except (TypeError, ValueError):
        return "grouped_conv2d"
    return "depthwise_conv2d" if groups == channels == outputs else "grouped_conv2d"


def with_main(mod: tvm.IRModule, main: relax.Function) -> tvm.IRModule:
    """A copy of ``mod`` with ``main`` replaced and every other function kept."""
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    out["main"] = main
    return out


def replace_main(mod: tvm.IRModule, main: relax.Function) -> tvm.IRModule:
    """:func:`with_main`, then bindings canonicalized and dead code removed (functions
    nothing calls any more included)."""
    out = relax.transform.CanonicalizeBindings()(with_main(mod, main))
    entries = [gv.name_hint for gv, f in out.functions_items() if isinstance(f, relax.Function)]
    return relax.transform.DeadCodeElimination(entries)(out)
