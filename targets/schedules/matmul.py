"""Dense, matmul and batched matmul (``C[..., i, j] = sum_k A[..., i, k] B[..., k, j]``)."""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from .common import (
    find_contraction,
    is_multiply_accumulate,
    pack_operand,
    pick_register_tile,
    schedule_contraction,
    vector_isa,
)


def schedule_matmul(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    """Schedule a fused matmul: operand B packed into column panels, register-tiled.

    Matches a function whose only reduction block has two or more spatial iterators
    (batch..., i, j) and one reduction iterator, with injective producers and consumers
    (bias, activation, residual add, scaling).
    """
    sch = s_tir.Schedule(func)
    op = find_contraction(sch, "S{2,}R")
    if op is None or not is_multiply_accumulate(sch, op.main):
        return None
    out = sch.get(op.main).writes[0].source
    *_, rows, cols = (int(d) for d in out.shape)
    tile = pick_register_tile(rows, cols, vector_isa(target), out.dtype)
    pack_operand(sch, op.main, func, tile.nvec * tile.vec)
    schedule_contraction(sch, op, tile)
    return sch
