"""Depthwise conv2d on a lane-wise dot-product instruction (``vpdpbusd`` without its broadcast).

A depthwise layer reduces over no channels, so the conv kernels' dot products (a group of
input channels per lane) do not apply, and :func:`.kernels.depthwise_conv2d` spends one
multiply-add per tap. Here each 32-bit lane holds four *kernel rows* of one channel instead:
the quad stage packs pixels ``(t, x) .. (t + 3, x)`` of each channel into one uint32 word
(zero-extend, shift, or: no byte shuffles), and one instruction multiplies 16 channels' quads
by their four row weights. A 3×3 window is then three instructions (one per kernel column;
the fourth row weighs zero) instead of nine multiply-adds, and one quad of rows ``y .. y + 3``
serves ``R`` = 2 output rows at stride 1 (the second with its weights one row lower), so each
word is built once per ``R`` rows and read ``R · KW`` times from cache.

Weights are packed at compile time as ``[R, KW, J, C, 4]``: output row ``s`` of a group of
``R``, kernel column, quad ``j`` (rows ``4j .. 4j + 3`` of the group's window), channel, row in
the quad, zero where that row is outside the output row's window. The reduction block is
annotated ``depthwise_dot`` with ``R`` (:data:`QUAD_ROWS_ATTR`) for the schedule
(:func:`.schedule.schedule_kernel`).
"""
from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .isa import DotISA, word_byte
from .kernels import ConvShape, _attrs, _ceil_div, _i64, _input, _pixel, _reduce

QUAD_ROWS_ATTR = "squeeze.quad_rows"  # block annotation: output rows sharing one group of row quads
MAX_QUAD_ROWS = 2  # more rows per group would leave too few accumulators per row in the register tile


# Narrower outputs stay on the float kernel: bench/depthwise.py on Zen 4, the kernel alone, row quads
# against it: 1.29-1.34x at 112, 56 and 28 pixels wide, 0.84-1.02x at 14 and 7.
MIN_WIDTH = 28


def applies(shape: ConvShape, isa: DotISA) -> bool:
    """Whether :func:`depthwise_dot` computes ``shape`` on ``isa``, where it pays: stride 1 (at
    stride 2 a word serves too few windows) and outputs at least :data:`MIN_WIDTH` wide."""
    return (shape.depthwise and bool(isa.lanewise) and isa.group == 4 and not isa.weight_offset
            and shape.in_channels % isa.lanes == 0 and shape.strides == (1, 1) and shape.dilation == (1, 1)
            and shape.out_width >= MIN_WIDTH)


def quad_rows(shape: ConvShape) -> int:
    """``R``: the most output rows (at most :data:`MAX_QUAD_ROWS`, dividing the output height)
    whose windows fit one group of ``ceil(KH / 4)`` row quads."""
    span = 4 * _ceil_div(shape.kernel_h, 4)
    fits = [r for r in range(1, MAX_QUAD_ROWS + 1)
            if shape.out_height % r == 0 and (r - 1) * shape.strides[0] + shape.kernel_h <= span]
    return max(fits)


def depthwise_dot(shape: ConvShape, isa: DotISA, pad_value: int = 0, layout: str = "NHWC") -> tirx.PrimFunc:
    """Depthwise conv2d of ``isa.act_dtype`` activations (pixels outside the image
    ``pad_value``) by :func:`pack_depthwise_dot_weight` weights → int32 NHWC."""
    rows, quads = quad_rows(shape), _ceil_div(shape.kernel_h, 4)
    (sh, sw), kw = shape.strides, shape.kernel_w
    data = _input(shape, layout, isa.act_dtype)
    weight = te.placeholder(_i64(rows, kw, quads, shape.in_channels, 4), isa.weight_dtype, name="weight")

    def word(b, g, j, x, c):
        top = g * rows * sh + 4 * j
        value = None
        for k in range(4):
            byte = _pixel(data, shape, layout, pad_value, b, top + k, x, c).astype("uint32")
            value = byte if value is None else tirx.bitwise_or(value, byte << tirx.const(8 * k, "uint32"))
        return value

    width = (shape.out_width - 1) * sw + kw
    quad = te.compute(_i64(shape.batch, shape.out_height // rows, quads, width, shape.in_channels), word,
                      name="row_quads")
    rx, rj, rk = _reduce(kw, "rx"), _reduce(quads, "rj"), _reduce(4, "rk")
    out = te.compute(
        _i64(shape.batch, shape.out_height, shape.out_width, shape.in_channels),
        lambda b, y, x, c: te.sum(word_byte(quad[b, y // rows, rj, x * sw + rx, c], rk)
                                  * weight[y % rows, rx, rj, c, rk].astype("int32"), axis=[rx, rj, rk]),
        name="depthwise", attrs={**_attrs("depthwise_dot", isa, shape.macs), QUAD_ROWS_ATTR: rows})
    return te.create_prim_func([data, weight, out])


def pack_depthwise_dot_weight(weight_oihw: np.ndarray, shape: ConvShape) -> np.ndarray:
    """``[C, 1, KH, KW]`` int8 → ``[R, KW, J, C, 4]`` int8 (see the module docstring)."""
    rows, quads = quad_rows(shape), _ceil_div(shape.kernel_h, 4)
    taps = weight_oihw[:, 0].transpose(2, 1, 0)  # [KW, KH, C]
    packed = np.zeros((rows, shape.kernel_w, 4 * quads, shape.in_channels), np.int8)
    for s in range(rows):
        top = s * shape.strides[0]
        packed[s, :, top:top + shape.kernel_h] = taps
    return np.ascontiguousarray(packed.reshape(rows, shape.kernel_w, quads, 4, -1).transpose(0, 1, 2, 4, 3))
