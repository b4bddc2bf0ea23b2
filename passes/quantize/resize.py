"""Bilinear Resize on int8 codes: fixed-point taps, int32 accumulation, one requantization.

Along each spatial axis an output position ``o`` reads input rows ``i0 = floor(x)`` and
``i1 = i0 + 1`` (both clamped to the axis) with weights ``2^F - w`` and ``w = round(frac(x) · 2^F)``,
where ``x`` is ``o`` mapped back by the coordinate transformation (ONNX ``Resize``). The two
separable passes accumulate ``(q - z)`` times both weights in int32 (|acc| < 2^8 · 2^(2F)), and
the result is requantized by ``2^-2F`` to the input's scale: an FPN's 2x upsampling (taps 1/4
and 3/4) is exact before that rounding.
"""
from __future__ import annotations

import numpy as np
from tvm import relax

FRACTION_BITS = 8
# Coordinate transformations with an integer form here; others keep the float-on-codes path.
MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")


def source_coordinates(out_size: int, in_size: int, mode: str) -> np.ndarray:
    """Input coordinate of each output position along one axis (ONNX Resize, sizes given)."""
    o = np.arange(out_size, dtype=np.float64)
    scale = out_size / in_size
    if mode == "align_corners":
        return o * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return o / scale
    if mode == "pytorch_half_pixel" and out_size == 1:
        return np.zeros(1)
    return (o + 0.5) / scale - 0.5


def taps(out_size: int, in_size: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(i0, i1, w0, w1)``: the two input positions per output position and their integer
    weights, which sum to ``2^FRACTION_BITS``."""
    x = np.clip(source_coordinates(out_size, in_size, mode), 0, in_size - 1)
    i0 = np.floor(x).astype(np.int64)
    w1 = np.round((x - i0) * (1 << FRACTION_BITS)).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (1 << FRACTION_BITS) - w1, w1


def _along(x: relax.Expr, out_size: int, in_size: int, mode: str, axis: int) -> relax.Expr:
    i0, i1, w0, w1 = taps(out_size, in_size, mode)
    shape = [1, 1, 1, 1]
    shape[axis] = out_size

    def tap(index: np.ndarray, weight: np.ndarray) -> relax.Expr:
        rows = relax.op.take(x, relax.const(index.astype(np.int32)), axis=axis)
        return relax.op.multiply(rows, relax.const(weight.reshape(shape).astype(np.int32)))

    return relax.op.add(tap(i0, w0), tap(i1, w1))


def supported(call: relax.Call) -> bool:
    """Whether a ``relax.image.resize2d`` has the integer form: bilinear, NCHW, a mode in :data:`MODES`
    (none of which reads the ROI)."""
    attrs = call.attrs
    return attrs.method == "linear" and attrs.layout == "NCHW" and attrs.coordinate_transformation_mode in MODES


def bilinear_accumulate(centred: relax.Expr, call: relax.Call) -> relax.Expr:
    """int32 ``Σ wy · wx · (q - z)`` of a supported resize (``centred``: int32 codes minus zero
    point, NCHW); its value is ``2^(2·FRACTION_BITS)`` times the interpolated codes."""
    _, _, in_h, in_w = (int(d) for d in call.args[0].ty.shape)
    _, _, out_h, out_w = (int(d) for d in call.ty.shape)
    mode = call.attrs.coordinate_transformation_mode
    return _along(_along(centred, out_h, in_h, mode, 2), out_w, in_w, mode, 3)
