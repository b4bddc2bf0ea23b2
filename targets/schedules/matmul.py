"""Dense, matmul and batched matmul (``C[..., i, j] = sum_k A[..., i, k] B[..., k, j]``)."""
from __future__ import annotations

import math

import tvm
from tvm import s_tir, tirx

from .common import (
    find_contraction,
    is_multiply_accumulate,
    pack_operand,
    pick_register_tile,
    schedule_contraction,
    uses_var,
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
    *batch, rows, cols = (int(d) for d in out.shape)
    isa = vector_isa(target)
    tile = pick_register_tile(rows, cols, isa, out.dtype)
    if batch and _weight_without_batch_axes(sch, op.main):
        across = pick_register_tile(rows * math.prod(batch), cols, isa, out.dtype)
        # a tile of whole batches, or within one: its output region stays a box
        if across.rows > tile.rows and (across.rows % rows == 0 or rows % across.rows == 0):
            sch.fuse(*sch.get_loops(op.main)[:len(batch) + 1])
            tile = across
    pack_operand(sch, op.main, func, tile.nvec * tile.vec)
    schedule_contraction(sch, op, tile)
    return sch


def _weight_without_batch_axes(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Whether the column operand has no batch axis (``x[T, B, K] @ W[K, N]``, an RNN's input
    projection): then a register tile may span the rows of several batches, all sharing one
    weight panel, instead of the few rows of one batch."""
    stmt = sch.get(block)
    *batch, _row, col = [iv.var for iv in stmt.iter_vars if iv.iter_type == tirx.IterVar.DataPar]
    for region in stmt.reads:
        indices = [r.min for r in region.region]
        if any(uses_var(i, col) for i in indices):
            return not any(uses_var(i, b) for i in indices for b in batch)
    return False
