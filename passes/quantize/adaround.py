"""AdaRound: learned rounding of weight codes (Nagel et al., 2020, "Up or Down? Adaptive
Rounding for Post-Training Quantization").

Per layer, each weight may round down or up: ``w_q = s · clip(floor(w / s) + h(V), qmin, qmax)``
with the rectified sigmoid ``h(V) = clip(σ(V)(ζ - γ) + γ, 0, 1)`` (ζ = 1.1, γ = -0.1). ``V``
minimizes the layer's output error on calibration rows plus a regularizer
``λ Σ 1 - |2h - 1|^β`` that pushes ``h`` to 0 or 1 as ``β`` anneals from 20 to 2 after a
warm-up; the codes are then ``floor + [h ≥ ½]``. Inputs are the rows as the integer layer sees
them (fake-quantized with the input's range), the target is the float layer's output, so the
rounding also absorbs part of the input's quantization error.

Numpy with Adam, not torch (the main venv has none): the objective is quadratic in ``w_q``, so
with the Gram matrices ``H = X_qᵀX_q`` and ``C = Y X_q`` each step is one batched
``[O, K] × [K, K]`` product per group, whatever the number of rows.
"""
from __future__ import annotations

import numpy as np

from .schemes import QuantSpec

ZETA, GAMMA = 1.1, -0.1


def nearest_codes(grouped_weight: np.ndarray, scale: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Round-to-nearest codes of ``[G, O, K]`` weights with ``[G, O]`` scales."""
    return spec.quantize(grouped_weight / scale[..., None], 1.0, 0)


def channel_errors(rows: np.ndarray, target: np.ndarray, grouped_weight: np.ndarray) -> np.ndarray:
    """Squared output error per output channel ``[G, O]`` of weights on ``rows`` against ``target``."""
    diff = np.einsum("mgk,gok->mgo", rows, grouped_weight, optimize=True) - target
    return np.einsum("mgo,mgo->go", diff, diff)


def _h(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rectified sigmoid and its derivative."""
    sig = 1.0 / (1.0 + np.exp(-v))
    raw = sig * (ZETA - GAMMA) + GAMMA
    inside = (raw > 0.0) & (raw < 1.0)
    return np.clip(raw, 0.0, 1.0), np.where(inside, sig * (1.0 - sig) * (ZETA - GAMMA), 0.0)


def adaround(rows: np.ndarray, target: np.ndarray, grouped_weight: np.ndarray, scale: np.ndarray,
             spec: QuantSpec, iters: int = 400, reg: float = 0.01, lr: float = 0.05,
             warmup: float = 0.2, beta: tuple[float, float] = (20.0, 2.0)) -> np.ndarray:
    """Learned codes ``[G, O, K]`` for ``[G, O, K]`` weights with ``[G, O]`` scales.

    Parameters
    ----------
    rows : np.ndarray
        ``[M, G, K]`` layer inputs as the integer layer sees them (fake-quantized).
    target : np.ndarray
        ``[M, G, O]`` outputs of the float layer on the float inputs (no bias).
    spec : QuantSpec
        The weight spec (codes clipped to ``[qmin, qmax]``).
    iters, reg, lr, warmup, beta
        Adam steps, regularizer weight λ, step size, share of steps without the regularizer,
        and the annealing range of β.
    """
    rows64, target64 = rows.astype(np.float64), target.astype(np.float64)
    m = len(rows)
    norm = np.maximum(np.einsum("mgo,mgo->go", target64, target64) / m, 1e-12)  # [G, O]
    if rows.shape[-1] <= m:  # Gram form: one [O, K] x [K, K] product per step
        gram = np.einsum("mgk,mgl->gkl", rows64, rows64, optimize=True) / m      # [G, K, K]
        cross = np.einsum("mgo,mgk->gok", target64, rows64, optimize=True) / m   # [G, O, K]

        def residual_grad(wq: np.ndarray) -> np.ndarray:
            return np.matmul(wq, gram) - cross
    else:  # fewer rows than inputs: through the rows
        by_group = rows64.transpose(1, 0, 2)                                     # [G, M, K]
        target_g = target64.transpose(1, 0, 2)                                   # [G, M, O]

        def residual_grad(wq: np.ndarray) -> np.ndarray:
            err = np.matmul(by_group, wq.transpose(0, 2, 1)) - target_g          # [G, M, O]
            return np.matmul(err.transpose(0, 2, 1), by_group) / m
    w = grouped_weight.astype(np.float64) / scale[..., None]
    low = np.floor(w)
    rest = np.clip(w - low, 1e-3, 1 - 1e-3)
    v = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)
    first, mom, var = 0.9, np.zeros_like(v), np.zeros_like(v)
    s3 = scale[..., None].astype(np.float64)
    k = w.shape[-1]
    start = int(warmup * iters)
    for step in range(iters):
        h, dh = _h(v)
        codes = low + h
        inside = (codes >= spec.qmin) & (codes <= spec.qmax)
        wq = s3 * np.clip(codes, spec.qmin, spec.qmax)
        grad_w = 2.0 * residual_grad(wq) / norm[..., None]                     # d rec / d wq
        grad = grad_w * s3 * inside * dh
        if step >= start:
            b = beta[1] + (beta[0] - beta[1]) * (1.0 - (step - start) / max(iters - start - 1, 1))
            t = 2.0 * h - 1.0
            grad = grad - reg / k * b * np.abs(t) ** (b - 1.0) * np.sign(t) * 2.0 * dh
        mom = first * mom + (1 - first) * grad
        var = 0.999 * var + 0.001 * grad * grad
        v = v - lr * (mom / (1 - first ** (step + 1))) / (np.sqrt(var / (1 - 0.999 ** (step + 1))) + 1e-8)
    h, _ = _h(v)
    return np.clip(low + (h >= 0.5), spec.qmin, spec.qmax)
