"""Default schedules of the bit-serial kernels (:mod:`.bitserial`) inside their fused PrimFuncs.

The function holds a padding stage, the activation bit-plane packing, the popcount reduction
and the combination of the plane-pair accumulators followed by the fused epilogue (bias,
bipolar weights' activation sums, requantization). The packing runs as its own parallel loop;
the reduction keeps a register tile of ``rows`` pixels × ``nvec`` vectors × plane pairs in
registers (AND, popcount, add on whole vectors of words), and the epilogue runs per tile.
"""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV

from ..schedules.common import extents, inline_injective, vector_isa, vectorize_inner
from .bitserial import KIND_ATTR
from .schedule import MAX_TILE_ROWS, MAX_TILE_VECTORS, _epilogue_at, _split_tile, kernel_block

OPERAND_REGISTERS = 8  # vector registers kept for weights and broadcast activations; the rest accumulate


def _named(sch: s_tir.Schedule, name: str) -> SBlockRV | None:
    return next((b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint == name), None)


def _tile(width: int, vectors: int, pairs: int, registers: int) -> tuple[int, int]:
    """Pixels × vectors of the register tile: the most accumulators within ``registers``."""
    budget = max(1, registers // pairs)
    best = (1, 1)
    for v in (d for d in range(1, min(vectors, budget, MAX_TILE_VECTORS) + 1) if vectors % d == 0):
        for r in (d for d in range(1, min(width, budget // v, MAX_TILE_ROWS) + 1) if width % d == 0):
            if (r * v, -r) > (best[0] * best[1], -best[0]):
                best = (r, v)
    return best


def _combine_at(sch: s_tir.Schedule, combine: SBlockRV, tile: LoopRV) -> None:
    """The plane-pair combination per register tile: ``pixel, plane pairs (unrolled), channels
    (vectorized)``."""
    sch.reverse_compute_at(combine, tile, preserve_unit_loops=True)
    *_, pixel, channel, ri, rj = sch.get_loops(combine)
    sch.reorder(pixel, ri, rj, channel)
    vectorize_inner(sch, combine, 16)
    init = sch.decompose_reduction(combine, ri)
    for loop in (ri, rj):
        sch.unroll(loop)
    vectorize_inner(sch, init, 16)


def schedule_bitserial(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    """Schedule a fused PrimFunc built around a bit-serial kernel (None if it has none)."""
    sch = s_tir.Schedule(func)
    found = kernel_block(sch, KIND_ATTR)
    if found is None:
        return None
    block, kind = found
    registers = vector_isa(target).registers - OPERAND_REGISTERS
    planes, combine = _named(sch, "planes"), _named(sch, "combine")
    keep = [planes, combine, block]
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    inline_injective(sch, [b for b in blocks[:-1] if not any(sch.get(b).same_as(sch.get(k)) for k in keep)])
    store = sch.get_child_blocks(sch.get_sblock("root"))[-1]
    lead = len(sch.get_loops(planes)) - 3  # planes: lead..., word, plane | bit
    sch.parallel(sch.fuse(*sch.get_loops(planes)[:min(2, lead)]))
    loops = sch.get_loops(block)
    if kind == "conv2d":
        b, y, x, g, o, i, j, lane, ry, rx, rw = loops
        reduce = [ry, rx, rw]
    else:
        *batch, x, o, i, j, lane, rw = loops
        reduce = [rw]
    width, vectors, pairs_i, pairs_j = extents(sch, [x, o, i, j])
    rows, nvec = _tile(width, vectors, pairs_i * pairs_j, registers)
    xo, xi = _split_tile(sch, x, rows, MAX_TILE_ROWS)
    oo, oi = _split_tile(sch, o, nvec, MAX_TILE_VECTORS)
    if kind == "conv2d":
        sch.reorder(b, y, g, oo, xo, *reduce, xi, oi, i, j, lane)
        sch.parallel(sch.fuse(b, y, g, oo))
        tile = xo
    else:
        sch.reorder(*batch, oo, xo, *reduce, xi, oi, i, j, lane)
        tile = sch.fuse(*batch, oo, xo)
        sch.parallel(tile)
    _combine_at(sch, combine, tile)
    if not sch.get(store).same_as(sch.get(combine)):
        _epilogue_at(sch, store, tile, 16)
    for loop in (xi, oi, i, j):
        sch.unroll(loop)
    sch.vectorize(lane)
    init = sch.decompose_reduction(block, reduce[0])
    sch.vectorize(sch.get_loops(init)[-1])
    return sch

