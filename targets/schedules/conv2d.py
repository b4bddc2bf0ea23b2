"""NHWC conv2d (regular, grouped, depthwise) with its fused epilogue."""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from .common import (
    find_contraction,
    is_multiply_accumulate,
    inline_injective,
    pack_operand,
    pick_register_tile,
    schedule_contraction,
    vector_isa,
)


def schedule_conv2d(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    """Schedule a fused NHWC conv2d: pad inlined, weights packed, register-tiled.

    Matches a function whose only reduction block has iterators ``n, y, x, f`` (spatial)
    and ``ry, rx, rc`` (reduction) and writes a 4-D output, with injective producers
    (padding) and consumers (bias, activation, residual add).
    """
    sch = s_tir.Schedule(func)
    conv = find_contraction(sch, "S{4}R{3}")
    if conv is None or not is_multiply_accumulate(sch, conv.main):
        return None
    out = sch.get(conv.main).writes[0].source
    _, _, width, channels = (int(d) for d in out.shape)
    inline_injective(sch, conv.producers)
    tile = pick_register_tile(width, channels, vector_isa(target), out.dtype)
    pack_operand(sch, conv.main, func, tile.nvec * tile.vec)
    schedule_contraction(sch, conv, tile)
    return sch
