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

from ..schedules.common import VectorISA, extents, inline_injective, vector_isa, vectorize_inner
from .bitserial import KIND_ATTR
from .schedule import MAX_TILE_ROWS, MAX_TILE_VECTORS, _epilogue_at, _split_tile, kernel_block

OPERAND_REGISTERS = 8  # without broadcast operands: kept for weights and broadcast words, the rest accumulate
IN_FLIGHT_REGISTERS = 9  # with them: left to LLVM for AND / popcount results (with 8, a 2×2-bit 2 × 2 tile
# ran 16 % slower than 2 × 1 on Zen 4)


def _named(sch: s_tir.Schedule, name: str) -> SBlockRV | None:
    return next((b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint == name), None)


def _tile(width: int, vectors: int, act_planes: int, weight_planes: int, isa: VectorISA) -> tuple[int, int]:
    """Pixels × vectors of the register tile.

    Each reduction step loads one weight vector per tile vector and broadcasts one activation
    word per tile pixel. Where the broadcast is an operand of the AND (AVX-512), the weight
    vectors are the only loads, so the tile takes the most pixels, then the most vectors, whose
    registers fit: the accumulators (pixels × vectors × plane pairs), the weight vectors, the
    broadcast words that serve several ANDs, and :data:`IN_FLIGHT_REGISTERS`. On Zen 4 a binary 3×3×256 conv at 28×28 runs 1.41×
    faster on 14 pixels × 1 vector than on 2 × 8. Elsewhere (NEON: every broadcast is a load
    into a register) the tile takes the most accumulators that leave :data:`OPERAND_REGISTERS`.
    """
    pairs = act_planes * weight_planes

    def used(rows: int, nvec: int) -> int:
        if not isa.broadcast_operand:
            return rows * nvec * pairs + OPERAND_REGISTERS
        shared = nvec * weight_planes > 1
        return (rows * nvec * pairs + nvec * weight_planes + (rows * act_planes if shared else 0)
                + IN_FLIGHT_REGISTERS)

    def preference(tile: tuple[int, int]) -> tuple[int, int]:
        rows, nvec = tile
        return (rows, nvec) if isa.broadcast_operand else (rows * nvec, -rows)

    fits = [(r, v) for v in range(1, min(vectors, MAX_TILE_VECTORS) + 1) if vectors % v == 0
            for r in range(1, min(width, MAX_TILE_ROWS) + 1) if width % r == 0 and used(r, v) <= isa.registers]
    return max(fits, key=preference, default=(1, 1))


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
    rows, nvec = _tile(width, vectors, pairs_i, pairs_j, vector_isa(target))
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

