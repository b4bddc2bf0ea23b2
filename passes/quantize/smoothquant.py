"""SmoothQuant (Xiao et al., 2023): migrate activation outliers into the weights.

A LayerNorm output feeding linear layers often has a few channels far larger than the rest, so
one per-tensor activation scale wastes most codes on them. For such an input ``x`` and every
matmul ``x @ W`` reading it, with ``s_j = max|x_j|^α / max|W_j,:|^(1-α)`` per input channel
(the weights of all its matmuls together), ``x @ W = (x / s) @ (diag(s) W)``: the division is a
per-channel multiply emitted once for the matmuls (the LayerNorm's other readers, such as a
residual add, keep ``x``) and ``diag(s) W`` is folded into the constant weights. The function
is unchanged up to float rounding; ``α`` balances how much of the range moves.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from compiler.ir import bindings, op_name, replace_main

from ..registry import register_pass

Const = tvm.ir.expr.Constant
SOURCES = ("relax.nn.layer_norm",)  # ops whose outputs are smoothed


def smoothable(func: relax.Function) -> dict:
    """``{x: [matmul bindings reading x]}`` for LayerNorm outputs read by matmuls with constant
    ``[K, N]`` weights."""
    producers = {b.var: b for b in bindings(func)}
    readers: dict = {}
    for b in bindings(func):
        if op_name(b.value) != "relax.matmul" or not isinstance(b.value.args[1], Const):
            continue
        x = b.value.args[0]
        if isinstance(x, relax.Var) and x in producers and op_name(producers[x].value) in SOURCES \
                and b.value.args[1].value.numpy().ndim == 2:
            readers.setdefault(x, []).append(b)
    return readers


def smoothing_scales(act_absmax: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """Per input channel ``s = max|x|^α / max|W|^(1-α)`` (1 where either side is all zeros)."""
    w_absmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    act = np.asarray(act_absmax, np.float64)
    ok = (act > 0) & (w_absmax > 0)
    s = np.where(ok, np.power(np.where(ok, act, 1.0), alpha) / np.power(np.where(ok, w_absmax, 1.0), 1.0 - alpha), 1.0)
    return np.clip(s, 1e-5, 1e5).astype(np.float32)


@register_pass("smoothquant")
def smoothquant(scales: dict) -> tvm.transform.Pass:
    """Divide each input ``x`` of ``scales`` (``{var of main: per-channel s}``, see
    :func:`smoothing_scales`) by ``s`` before its matmuls and fold ``s`` into their weights.

    Returns
    -------
    tvm.transform.Pass
        A module pass rewriting ``main`` (other functions kept).
    """

    @tvm.transform.module_pass(opt_level=0, name="smoothquant")
    def transform(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod["main"]
        readers = smoothable(func)
        plan = {b.var: s for x, bs in readers.items() if x in scales for b in bs for s in [scales[x]]}
        if not plan:
            return mod
        return replace_main(mod, _Smooth(plan, {x: scales[x] for x in readers if x in scales}).visit_expr(func))

    return transform


@mutator
class _Smooth(PyExprMutator):
    def __init__(self, plan: dict, inputs: dict) -> None:
        super().__init__()
        self.plan, self.inputs, self.divided = plan, inputs, {}

    def visit_var_binding_(self, binding) -> None:
        if binding.var not in self.plan:
            super().visit_var_binding_(binding)
            return
        call, s = binding.value, self.plan[binding.var]
        x = call.args[0]
        if x not in self.divided:
            self.divided[x] = self.builder_.emit(relax.op.multiply(self.visit_expr(x), relax.const(1.0 / s)))
        weight = relax.const((call.args[1].value.numpy() * s[:, None]).astype(np.float32))
        new = self.builder_.normalize(relax.Call(call.op, [self.divided[x], weight], call.attrs, call.ty_args))
        self.builder_.emit_normalized(relax.VarBinding(binding.var, new))
