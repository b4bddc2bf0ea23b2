"""Window and global reductions over spatial axes (max/avg pooling, mean over H×W)."""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from .common import (
    find_contraction,
    inline_injective,
    pick_register_tile,
    schedule_contraction,
    uses_var,
    vector_isa,
)


def schedule_pool(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    """Schedule a reduction that keeps the innermost (channel) axis: vectorized over it.

    Matches a function whose only reduction block has two or more spatial iterators and
    reduces over axes other than the output's innermost one, i.e. the innermost spatial
    iterator indexes the inputs' last axis and no other (NHWC pooling,
    ``mean`` over H and W); padding is inlined, the epilogue (division) fused.
    """
    sch = s_tir.Schedule(func)
    op = find_contraction(sch, "S{2,}R+")
    if op is None or not _reduces_outer_axes(sch, op.main):
        return None
    out = sch.get(op.main).writes[0].source
    *_, rows, cols = (int(d) for d in out.shape)
    inline_injective(sch, op.producers)
    schedule_contraction(sch, op, pick_register_tile(rows, cols, vector_isa(target), out.dtype))
    return sch


def _reduces_outer_axes(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Whether the innermost spatial iterator indexes the last axis of the reads, and only it."""
    stmt = sch.get(block)
    col = [iv.var for iv in stmt.iter_vars if iv.iter_type == tirx.IterVar.DataPar][-1]
    uses = [[uses_var(r.min, col) for r in region.region] for region in stmt.reads]
    return any(u and u[-1] for u in uses) and not any(any(u[:-1]) for u in uses)
