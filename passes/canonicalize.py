"""Canonical forms that later passes and targets match on."""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_call_tir, is_const, is_op, rewrite_call, wildcard

from .registry import register_pass


def _scalar(expr) -> float | None:
    value = expr.value.numpy()
    return float(value) if value.size == 1 else None


@register_pass("canonicalize_clip")
def canonicalize_clip() -> tvm.transform.Pass:
    """Rewrite ``minimum(maximum(x, lo), hi)`` with scalar constants as ``clip(x, lo, hi)``.

    ``maximum(x, 0)`` alone becomes ``relu(x)``. TVM's ONNX importer lowers every opset-11+
    ``Clip`` to TE ``maximum``/``minimum`` kernels (``call_tir``); those are matched too, once
    constant folding has made their bounds constants. Quantization fuses ``clip``/``relu`` into
    requantization; targets fuse them into kernel epilogues.

    Returns
    -------
    tvm.transform.Pass
        A function pass over Relax functions.
    """
    x, lo, hi = wildcard(), is_const(), is_const()
    lower = is_op("relax.maximum")(x, lo) | is_call_tir("maximum", [x, lo])
    both = is_op("relax.minimum")(lower, hi) | is_call_tir("minimum", [lower, hi])

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        low = _scalar(matches[lo])
        if low is None:
            return expr
        if both in matches:
            high = _scalar(matches[hi])
            return expr if high is None else relax.op.clip(matches[x], low, high)
        return relax.op.nn.relu(matches[x]) if low == 0.0 else expr

    @relax.transform.function_pass(opt_level=0, name="canonicalize_clip")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        return rewrite_call(both | lower, rewriter, func)

    return transform
