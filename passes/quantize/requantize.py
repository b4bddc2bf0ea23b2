"""Requantization: int32 accumulators → narrow integer codes, float or integer-only.

Float rule:          ``q = clip(round(acc · M) + z, lo, hi)``  (float32 multiply, round half to even)
Integer-only rule:   ``q = clip(((acc · m0 + 2^(n-1)) >> n) + z, lo, hi)`` with int64 arithmetic,
                     ``M ≈ m0 · 2^-n`` and ``m0`` in [2^30, 2^31) (gemmlowp-style; rounds half up).
Both are emitted as plain Relax ops so that FuseOps folds them into the producing kernel's epilogue,
and both have a numpy reference that the compiled IR must match bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax

from .schemes import fixed_point_multiplier


@dataclass(frozen=True)
class Requant:
    """One requantization: per-channel (or scalar) multiplier, output zero point and clip bounds."""

    multiplier: np.ndarray
    zero: int
    lo: int
    hi: object  # int, or per-channel np.ndarray
    out_dtype: str
    integer_only: bool = False


def _channel_const(values: np.ndarray, dtype: str, ndim: int, axis: int) -> relax.Expr:
    values = np.asarray(values).reshape(-1)
    if values.size == 1:
        return relax.const(values[0].astype(dtype), dtype)
    shape = [1] * ndim
    shape[axis % ndim] = values.size
    return relax.const(values.reshape(shape).astype(dtype), dtype)


def rescale(acc: relax.Expr, multiplier: np.ndarray, ndim: int, axis: int, integer_only: bool) -> relax.Expr:
    """``acc · multiplier`` before the zero point: float32 unrounded, or int64 rounded (fixed point);
    power-of-two multipliers (``_pow2`` scales) rescale by shifts alone, with the same rounding."""
    if integer_only:
        m0, shift = fixed_point_multiplier(multiplier)
        if np.all(m0 == 1 << 30):  # M = 2^(30 - shift): (acc + 2^(k-1)) >> k, k = shift - 30 (or acc << -k)
            return _shift_only(relax.op.astype(acc, "int64"), shift - 30, ndim, axis)
        prod = relax.op.multiply(relax.op.astype(acc, "int64"), _channel_const(m0, "int64", ndim, axis))
        rounded = relax.op.add(prod, _channel_const(np.left_shift(1, shift - 1), "int64", ndim, axis))
        return relax.op.right_shift(rounded, _channel_const(shift, "int64", ndim, axis))
    return relax.op.multiply(relax.op.astype(acc, "float32"), _channel_const(multiplier, "float32", ndim, axis))


def _shift_only(acc: relax.Expr, k: np.ndarray, ndim: int, axis: int) -> relax.Expr:
    """``acc · 2^-k`` rounded half up, by shifts only (``k`` per channel, negative: a left shift)."""
    if np.all(k <= 0):
        return relax.op.left_shift(acc, _channel_const(-k, "int64", ndim, axis))
    if np.any(k < 0):  # mixed directions: shift left first by the largest left shift
        lead = int(-k.min())
        acc, k = relax.op.left_shift(acc, relax.const(lead, "int64")), k + lead
    rounded = relax.op.add(acc, _channel_const(np.where(k > 0, np.left_shift(1, np.maximum(k - 1, 0)), 0), "int64",
                                               ndim, axis))
    return relax.op.right_shift(rounded, _channel_const(k, "int64", ndim, axis))


def finish(scaled: relax.Expr, zero: int, lo: int, hi, out_dtype: str, integer_only: bool,
           ndim: int = 0, axis: int = 1) -> relax.Expr:
    """Round (float path), add the output zero point, clip to [lo, hi] and narrow to ``out_dtype``.

    ``hi`` may be per channel (along ``axis`` of an ``ndim``-D tensor): an equalized ReLU6.
    """
    dtype = "int64" if integer_only else "float32"
    q = scaled if integer_only else relax.op.round(scaled)
    q = relax.op.add(q, relax.const(np.asarray(zero, dtype), dtype))
    hi = np.asarray(hi)
    q = relax.op.clip(q, int(lo), int(hi.max()))
    if hi.size > 1:
        q = relax.op.minimum(q, _channel_const(hi, dtype, ndim, axis))
    return relax.op.astype(q, out_dtype)


def requantize(acc: relax.Expr, rq: Requant, ndim: int, axis: int) -> relax.Expr:
    """Relax expression requantizing int32 ``acc`` (channels along ``axis``) per ``rq``."""
    scaled = rescale(acc, rq.multiplier, ndim, axis, rq.integer_only)
    return finish(scaled, rq.zero, rq.lo, rq.hi, rq.out_dtype, rq.integer_only, ndim, axis)


def requantize_reference(acc: np.ndarray, rq: Requant, axis: int) -> np.ndarray:
    """Numpy reference of :func:`requantize`, bit-exact with the compiled IR."""
    shape = [1] * acc.ndim
    mult = np.asarray(rq.multiplier).reshape(-1)
    if mult.size > 1:
        shape[axis % acc.ndim] = mult.size
    if rq.integer_only:
        m0, shift = (a.reshape(shape) for a in fixed_point_multiplier(mult))
        q = ((acc.astype(np.int64) * m0 + (np.int64(1) << (shift - 1))) >> shift) + rq.zero
    else:
        prod = acc.astype(np.float32) * mult.astype(np.float32).reshape(shape)
        q = np.round(prod) + np.float32(rq.zero)
    hi = np.asarray(rq.hi)
    return np.clip(q, rq.lo, hi.reshape(shape) if hi.size > 1 else hi).astype(rq.out_dtype)
