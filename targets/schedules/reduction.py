"""Row reductions over the innermost axis (softmax, layer norm, sum/max over the last axis)."""
from __future__ import annotations

import re

import tvm
from tvm import s_tir, tirx

from .common import extents, inline_injective, iter_kinds, vector_isa, vectorize_inner
from .elementwise import PARALLEL_MIN_ELEMENTS


def schedule_row_reduction(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    """Compute each row's reductions and elementwise stages together, rows in parallel.

    Matches functions whose blocks all start with the same spatial (row) axes and whose
    reduction blocks reduce over their innermost loops.
    Each reduction is split into ``lanes`` partial results (``rfactor``) accumulated with
    vector instructions, then summed; every stage is moved under the row loop.
    """
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    kinds = [iter_kinds(sch, b) for b in blocks]
    if not any("R" in k for k in kinds) or not all(re.fullmatch("S+R*", k) for k in kinds):
        return None
    inline_injective(sch, [b for b in blocks[:-1] if len(sch.get_consumers(b)) == 1])
    blocks = sch.get_child_blocks(root)
    rows = min(len(k) - len(k.lstrip("S")) for k in (iter_kinds(sch, b) for b in blocks))
    lanes = vector_isa(target).lanes(str(sch.get(blocks[-1]).writes[0].source.dtype))
    partials = {_split_reduction(sch, b, lanes) for b in blocks if "R" in iter_kinds(sch, b)}
    last = sch.get_child_blocks(root)[-1]
    loops = sch.get_loops(last)
    row = sch.fuse(*loops[:rows]) if rows > 1 else loops[0]
    for block in reversed(sch.get_child_blocks(root)[:-1]):
        sch.compute_at(block, row, preserve_unit_loops=True)
    for block in sch.get_child_blocks(root):
        if sch.get(block).name_hint in partials:
            *_, vec, red = sch.get_loops(block)
            sch.reorder(red, vec)
            sch.vectorize(vec)
        elif "R" not in iter_kinds(sch, block):
            vectorize_inner(sch, block, lanes)
    total = 1
    for ext in extents(sch, sch.get_loops(last)):
        total *= ext or PARALLEL_MIN_ELEMENTS
    if total >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(row)
    return sch


def _split_reduction(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> str:
    """``rfactor`` a reduction's innermost loop into ``lanes`` partial results.

    Returns the name of the block computing the partials (its two innermost loops: partial
    index, then reduction), or ``""`` when the loop is too short to be worth it.
    """
    inner = sch.get_loops(block)[-1]
    (ext,) = extents(sch, [inner])
    if ext is None or ext % lanes or ext < 2 * lanes:
        return ""
    _, lane = sch.split(inner, [None, lanes])
    partial = sch.rfactor(lane, factor_axis=iter_kinds(sch, block).count("S"))
    # rfactor puts the partial index first; make it the innermost spatial iterator so that
    # compute_at regenerates the loops as [..., partial index, reduction].
    num_spatial = iter_kinds(sch, partial).count("S")
    order = [*range(1, num_spatial), 0, *range(num_spatial, len(sch.get(partial).iter_vars))]
    sch.reorder_block_iter_var(partial, order)
    return sch.get(partial).name_hint
