"""Quantization schemes whose names spell the spec, e.g. ``w8_sym_per_channel__a8_asym_per_tensor``.

A scheme pairs a weight spec and an activation spec. Each spec says bits, symmetric or
asymmetric, per-channel or per-tensor, and its scale rule (float, or power of two for
shift-only hardware, Brevitas-style ``_pow2`` suffix). Weights may be log-quantized (``_log``):
codes ``0, ±2^k``, so every product is a shift.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from compiler.errors import SqueezeError


@dataclass(frozen=True)
class QuantSpec:
    """How one kind of tensor is quantized."""

    bits: int = 8
    symmetric: bool = True
    per_channel: bool = False
    power_of_two: bool = False
    log: bool = False  # codes 0 and ±2^k, k < 2^(bits-1) - 1 (a sign bit and an exponent)

    @property
    def unsigned(self) -> bool:
        """Asymmetric tensors use unsigned codes (uint8 containers), symmetric ones signed."""
        return not self.symmetric

    @property
    def dtype(self) -> str:
        return "uint8" if self.unsigned else "int8"

    @property
    def qmin(self) -> int:
        return 0 if self.unsigned else -self.qmax

    @property
    def qmax(self) -> int:
        if self.log:
            return 2 ** (2 ** (self.bits - 1) - 2)
        return 2**self.bits - 1 if self.unsigned else 2 ** (self.bits - 1) - 1

    @property
    def name(self) -> str:
        return (f"{self.bits}_{'sym' if self.symmetric else 'asym'}_"
                f"{'per_channel' if self.per_channel else 'per_tensor'}{'_log' if self.log else ''}"
                f"{'_pow2' if self.power_of_two else ''}")

    def restrict_scale(self, scale: np.ndarray) -> np.ndarray:
        """Apply the scale rule: powers of two are rounded up so that nothing extra clips."""
        scale = np.maximum(np.asarray(scale, dtype=np.float64), 1e-12)
        return np.exp2(np.ceil(np.log2(scale))) if self.power_of_two else scale

    def qparams(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point for the float range [lo, hi] (widened to include 0)."""
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        if self.symmetric:
            scale = self.restrict_scale(np.maximum(-lo, hi) / self.qmax)
            return scale, np.zeros_like(scale, dtype=np.int64)
        scale = self.restrict_scale((hi - lo) / (self.qmax - self.qmin))
        zero = np.clip(np.round(self.qmin - lo / scale), self.qmin, self.qmax).astype(np.int64)
        return scale, zero

    def quantize(self, x: np.ndarray, scale, zero) -> np.ndarray:
        """Numpy reference: ``clip(round(x / scale) + zero)`` (round half to even, like R.round);
        log codes: the power of two nearest in the log domain (below half the smallest: 0)."""
        if not self.log:
            return np.clip(np.round(x / scale) + zero, self.qmin, self.qmax)
        v = np.asarray(x / scale, dtype=np.float64)
        exponent = np.clip(np.round(np.log2(np.maximum(np.abs(v), 1e-30))), 0, np.log2(self.qmax))
        return np.where(np.abs(v) < 0.5, 0.0, np.sign(v) * np.exp2(exponent))


@dataclass(frozen=True)
class Scheme:
    """Weights and activations specs, plus the requantization rule."""

    weights: QuantSpec
    activations: QuantSpec
    integer_only: bool = False

    @property
    def name(self) -> str:
        return f"w{self.weights.name}__a{self.activations.name}" + ("__fixed_point" if self.integer_only else "")

    def weight_qparams(self, w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Symmetric weight scales, one per output channel along ``axis`` (or one per tensor)."""
        if self.weights.per_channel:
            other = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
            lo, hi = w.min(axis=other), w.max(axis=other)
        else:
            lo, hi = np.array(w.min()), np.array(w.max())
        return self.weights.qparams(lo, hi)


_SPEC = re.compile(r"(\d+)_(sym|asym)_(per_channel|per_tensor)(_log)?(_pow2)?$")


def _parse_spec(text: str) -> QuantSpec:
    m = _SPEC.match(text)
    if not m or int(m.group(1)) not in (1, 2, 4, 8) or (m.group(4) and not 2 <= int(m.group(1)) <= 4):
        raise ValueError(text)
    return QuantSpec(int(m.group(1)), m.group(2) == "sym", m.group(3) == "per_channel", bool(m.group(5)),
                     bool(m.group(4)))


ALIASES = {
    "int8": "w8_sym_per_channel__a8_asym_per_tensor",
    "int8_sym": "w8_sym_per_channel__a8_sym_per_tensor",
    "int8_per_tensor": "w8_sym_per_tensor__a8_asym_per_tensor",
    "int8_pow2": "w8_sym_per_channel_pow2__a8_sym_per_tensor_pow2__fixed_point",
    "int4": "w4_sym_per_channel__a8_asym_per_tensor",
    "int4_log": "w4_sym_per_channel_log__a8_asym_per_tensor",
    "int4_log_shift": "w4_sym_per_channel_log_pow2__a8_sym_per_tensor_pow2__fixed_point",
    "int8_integer_only": "w8_sym_per_channel__a8_asym_per_tensor__fixed_point",
}


def parse_scheme(name: str) -> Scheme:
    """Parse a scheme name (or alias such as ``int8``) into a :class:`Scheme`.

    Grammar: ``w{bits}_{sym}_{per_channel|per_tensor}[_log][_pow2]__a{bits}_{sym|asym}_per_tensor[_pow2]
    [__fixed_point]``; weights are always symmetric, log codes (2-4 bits) only for weights.
    """
    full = ALIASES.get(name, name)
    parts = full.split("__")
    try:
        if len(parts) not in (2, 3) or parts[0][0] != "w" or parts[1][0] != "a":
            raise ValueError(full)
        if len(parts) == 3 and parts[2] != "fixed_point":
            raise ValueError(full)
        weights, acts = _parse_spec(parts[0][1:]), _parse_spec(parts[1][1:])
        if not weights.symmetric or acts.per_channel or acts.log:
            raise ValueError(full)
    except (ValueError, IndexError):
        raise SqueezeError(
            f"unknown quantization scheme '{name}': use an alias ({', '.join(ALIASES)}) or a name like "
            "w8_sym_per_channel__a8_asym_per_tensor[__fixed_point] (weights symmetric, activations per tensor;"
            " _log weights of 2-4 bits)"
        ) from None
    return Scheme(weights, acts, integer_only=len(parts) == 3)


def fixed_point_multiplier(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split positive multipliers into int32 ``m0`` in [2^30, 2^31) and a right shift ``n``.

    ``m ≈ m0 · 2^-n``; see :func:`passes.quantize.requantize.requantize_reference`.
    """
    m = np.atleast_1d(np.asarray(m, dtype=np.float64))
    mant, exp = np.frexp(m)  # m = mant · 2^exp, mant in [0.5, 1)
    m0 = np.round(mant * 2.0**31).astype(np.int64)
    carry = m0 == 2**31
    m0 = np.where(carry, m0 // 2, m0)
    exp = exp + carry
    shift = 31 - exp
    if np.any(shift < 1) or np.any(shift > 62):
        raise SqueezeError(f"requantization multiplier out of range ({float(m.min()):.3g}..{float(m.max()):.3g})")
    return m0, shift.astype(np.int64)
