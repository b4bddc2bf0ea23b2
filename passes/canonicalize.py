"""Canonical forms that later passes and targets match on."""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_call_tir, is_const, is_op, rewrite_call, wildcard

from .registry import register_pass


def _scalar(expr) -> float | None:
    """The value of a one-element constant (None for a larger one or NaN)."""
    value = expr.value.numpy()
    return float(value) if value.size == 1 and value == value else None


def _bound():
    """A clip bound: a constant, or the importer's NaN guard ``where(isnan(c), ±inf, c)`` of one
    (a non-NaN constant: the guard keeps it); returns the pattern and the constant's pattern."""
    value = is_const()
    return value | is_op("relax.where")(is_op("relax.isnan")(is_const()), is_const(), value), value


@register_pass("canonicalize_clip")
def canonicalize_clip() -> tvm.transform.Pass:
    """Rewrite ``minimum(maximum(x, lo), hi)`` with scalar constants as ``clip(x, lo, hi)``.

    ``maximum(x, 0)`` alone becomes ``relu(x)``. TVM's ONNX importer lowers every opset-11+
    ``Clip`` to TE ``maximum``/``minimum`` kernels (``call_tir``) with NaN-guarded bounds; those
    are matched too, before or after constant folding. Quantization fuses ``clip``/``relu`` into
    requantization; targets fuse them into kernel epilogues.

    Returns
    -------
    tvm.transform.Pass
        A function pass over Relax functions.
    """
    x, (lo, lo_value), (hi, hi_value) = wildcard(), _bound(), _bound()
    lower = is_op("relax.maximum")(x, lo) | is_call_tir("maximum", [x, lo])
    both = is_op("relax.minimum")(lower, hi) | is_call_tir("minimum", [lower, hi])

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        low = _scalar(matches[lo_value])
        if low is None:
            return expr
        if both in matches:
            high = _scalar(matches[hi_value])
            return expr if high is None else relax.op.clip(matches[x], low, high)
        return relax.op.nn.relu(matches[x]) if low == 0.0 else expr

    @relax.transform.function_pass(opt_level=0, name="canonicalize_clip")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        return rewrite_call(both | lower, rewriter, func)

    return transform


def _last_axis(call: relax.Call) -> bool:
    ndim = len(call.args[0].ty.shape)
    return [int(a) % ndim for a in call.attrs.axis] == [ndim - 1] and bool(call.attrs.keepdims)


@register_pass("canonicalize_layer_norm")
def canonicalize_layer_norm() -> tvm.transform.Pass:
    """Rewrite LayerNorm written out in elementary ops as ``R.nn.layer_norm`` over the last axis.

    Exporters before opset 17 (PaddlePaddle, older PyTorch) emit ``ReduceMean → Sub → Pow(2) →
    ReduceMean → Add(eps) → Sqrt → Div → Mul(γ) → Add(β)``; one op computes it in one kernel
    and lets quantization treat it as one op with integer inputs and outputs.

    Returns
    -------
    tvm.transform.Pass
        A function pass over Relax functions.
    """
    x, eps, gamma, beta = wildcard(), is_const(), wildcard(), wildcard()
    mean = is_op("relax.mean")(x)
    centred = is_op("relax.subtract")(x, mean)
    square = is_op("relax.power")(centred, is_const()) | is_op("relax.multiply")(centred, centred)
    var = is_op("relax.mean")(square)
    norm = is_op("relax.divide")(centred, is_op("relax.sqrt")(is_op("relax.add")(var, eps)))
    scaled = is_op("relax.multiply")(norm, gamma)
    pattern = is_op("relax.add")(scaled, beta)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        data, g, b = matches[x], matches[gamma], matches[beta]
        width = int(data.ty.shape[-1])
        shapes_ok = all(v.ty.shape is not None and [int(d) for d in v.ty.shape] == [width] for v in (g, b))
        power = matches.get(square)
        if not (shapes_ok and _last_axis(matches[mean]) and _last_axis(matches[var]) and _scalar(matches[eps]) is not None):
            return expr
        if power is not None and getattr(power.op, "name", "") == "relax.power" and _scalar(power.args[1]) != 2.0:
            return expr
        return relax.op.nn.layer_norm(data, g, b, axes=[-1], epsilon=_scalar(matches[eps]))

    @relax.transform.function_pass(opt_level=0, name="canonicalize_layer_norm")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        return rewrite_call(pattern, rewriter, func)

    return transform
