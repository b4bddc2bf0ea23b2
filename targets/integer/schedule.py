"""Default schedules of the integer kernels (:mod:`.kernels`) inside their fused PrimFuncs.

A fused PrimFunc holds one annotated reduction block (conv2d, depthwise or matmul), its
producers (a padding stage) and its consumers (crop, bias, requantization, activation,
residual add). The schedule tiles the output into a register block of ``rows`` pixels ×
``nvec`` vectors of output channels, keeps the int32 accumulators in registers while the
reduction runs (tensorized with the ISA's dot-product intrinsic), then runs the whole
epilogue on the tile, vectorized, and stores narrow codes: the int32 tensor never reaches
memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV, ScheduleError

from ..schedules.common import extents, inline_injective, vector_isa, vectorize_inner
from .depthwise_dot import QUAD_ROWS_ATTR
from .isa import DotISA, get_isa, use_intrin
from .kernels import ISA_ATTR, KERNEL_ATTR, WINDOW_SUM_ATTR

# Accumulators live in a stack buffer, which TVM only allows below 1024 bytes (larger ones
# go through TVMBackendAllocWorkspace, once per tile): e.g. at most 15 vectors of 64 bytes.
MAX_ACC_BYTES = 1023
# Vector registers reserved for operands (weights, broadcast activation) besides accumulators.
SPARE_REGISTERS = 6
MAX_TILE_ROWS = 16  # largest register-tile sizes MetaSchedule may sample
MAX_TILE_VECTORS = 8


@dataclass(frozen=True)
class Tile:
    """Register block: ``rows`` output pixels (or matrix rows) × ``nvec`` accumulator vectors."""

    rows: int
    nvec: int


def kernel_block(sch: s_tir.Schedule, attr: str = KERNEL_ATTR) -> tuple[SBlockRV, str] | None:
    """The integer reduction block of the function annotated ``attr`` and its kind, if any."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        kind = sch.get(block).annotations.get(attr)
        if kind is not None:
            return block, str(kind)
    return None


def block_isa(sch: s_tir.Schedule, block: SBlockRV) -> DotISA:
    """The registered dot-product ISA the kernel block was written for (unknown: an error)."""
    return get_isa(str(sch.get(block).annotations[ISA_ATTR]))


def pick_tile(rows: int, nvecs: int, lanes: int, registers: int) -> Tile:
    """Largest register block dividing the output (``rows`` × ``nvecs`` vectors of ``lanes``
    int32 accumulators, ``registers`` vector registers in all).

    Among blocks whose accumulators fit the stack limit and the register file, prefer the
    most accumulators (latency hiding), then the fewest operand loads per instruction.
    """
    budget = min(MAX_ACC_BYTES // (lanes * 4), registers - SPARE_REGISTERS)
    best, best_key = Tile(1, 1), None
    for v in (d for d in range(1, min(nvecs, budget, MAX_TILE_VECTORS) + 1) if nvecs % d == 0):
        for r in (d for d in range(1, min(rows, budget // v, MAX_TILE_ROWS) + 1) if rows % d == 0):
            key = (r * v, -(r + v) / (r * v))
            if best_key is None or key > best_key:
                best, best_key = Tile(r, v), key
    return best


def _around(sch: s_tir.Schedule, main: SBlockRV) -> tuple[list[SBlockRV], SBlockRV]:
    """The producers of ``main`` (padding) and its epilogue: the consumers inlined into the last one."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    at = [i for i, b in enumerate(blocks) if sch.get(b).same_as(sch.get(main))][0]
    inline_injective(sch, blocks[at + 1:-1])
    return blocks[:at], sch.get_child_blocks(sch.get_sblock("root"))[-1]


def _nbytes(buf: tirx.Buffer) -> int:
    size = tvm.DataType(str(buf.dtype)).bits // 8
    for d in buf.shape:
        size *= int(d)
    return size


def _schedule_spatial(sch: s_tir.Schedule, block: SBlockRV, lanes: int, shared: int = 0) -> None:
    """Parallel outer loops, vectorized inner loop: for padding stages and stand-alone epilogues.

    The ``shared`` outermost loops (enclosing other blocks too) are left alone.
    """
    loops = sch.get_loops(block)[shared:]
    if len(loops) > 1:
        sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0])
    vectorize_inner(sch, block, lanes)


def _epilogue_at(sch: s_tir.Schedule, store: SBlockRV, loop: LoopRV, lanes: int) -> None:
    """Compute the epilogue per register tile (under ``loop``), else as its own loop nest."""
    try:
        sch.reverse_compute_at(store, loop, preserve_unit_loops=True)
    except ScheduleError:
        _schedule_spatial(sch, store, lanes)
        return
    vectorize_inner(sch, store, lanes)


def schedule_window_sum(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    """Schedule a fused PrimFunc around :func:`.kernels.window_sum` (None if it has none): the
    channel sums and the box sums (with what was fused after them) each a loop parallel over
    image rows, channels innermost."""
    sch = s_tir.Schedule(func)
    found = kernel_block(sch, WINDOW_SUM_ATTR)
    if found is None:
        return None
    box = found[0]
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    index = [sch.get(b).same_as(sch.get(box)) for b in blocks].index(True)
    sums, consumers = blocks[0], blocks[index + 1:]
    inline_injective(sch, consumers[:-1])
    for block in (sums, box):
        sch.parallel(sch.fuse(*sch.get_loops(block)[:2]))
    if consumers:
        store = sch.get_child_blocks(sch.get_sblock("root"))[-1]
        sch.reverse_compute_at(store, sch.get_loops(box)[1])
        vectorize_inner(sch, store, vector_isa(target).lanes("int32"))
    return sch


def schedule_int8(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    """Schedule a fused PrimFunc built around an integer kernel (None if it has none)."""
    sch = s_tir.Schedule(func)
    found = kernel_block(sch)
    if found is None or not schedule_kernel(sch, *found):
        return None
    return sch


def schedule_kernel(sch: s_tir.Schedule, block: SBlockRV, kind: str) -> bool:
    """Schedule the function around integer kernel ``block`` in place.

    Register-tile sizes go through ``sample_perfect_tile`` with the heuristic's choice as
    decision, so the same template is MetaSchedule's search space (:mod:`.tuning`).
    """
    isa = block_isa(sch, block)
    {"depthwise": _schedule_depthwise, "depthwise_dot": _schedule_depthwise_dot, "conv2d": _schedule_conv2d,
     "matmul": _schedule_matmul}[kind](sch, block, isa)
    return True


def _split_tile(sch: s_tir.Schedule, loop: LoopRV, inner: int, max_inner: int) -> list[LoopRV]:
    """Split ``loop`` into (outer, inner) by a sampled perfect tile whose decision is ``inner``."""
    (extent,) = extents(sch, [loop])
    factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=max_inner, decision=[extent // inner, inner])
    return sch.split(loop, factors)


def _schedule_depthwise_dot(sch: s_tir.Schedule, block: SBlockRV, isa: DotISA) -> None:
    """Loops ``b, y, x, c | rx, rj, rk`` → ``par(b, c_out, y_out) [row quads], x_out | rj, rx,
    y_in, x_in, [c_lane, rk] = lane-wise intrinsic`` (:mod:`.depthwise_dot`): each thread packs
    the row quads of its ``R`` output rows and channel vector, then runs register tiles of
    ``R`` rows × a run of pixels over them."""
    (quads,), store = _around(sch, block)
    rows = int(sch.get(block).annotations[QUAD_ROWS_ATTR])
    b, y, x, c, rx, rj, rk = sch.get_loops(block)
    (width,) = extents(sch, [x])
    budget = min(MAX_ACC_BYTES // isa.vector_bytes, isa.registers - SPARE_REGISTERS) // rows
    run = max(d for d in range(1, min(width, budget, MAX_TILE_ROWS) + 1) if width % d == 0)
    yo, yi = sch.split(y, [None, rows])
    co, lane = sch.split(c, [None, isa.lanes])
    xo, xi = _split_tile(sch, x, run, MAX_TILE_ROWS)
    sch.reorder(b, co, yo, xo, rj, rx, yi, xi, lane, rk)
    outer = sch.fuse(b, co, yo)
    sch.parallel(outer)
    sch.compute_at(quads, outer)
    vectorize_inner(sch, quads, isa.lanes)
    if not sch.get(store).same_as(sch.get(block)):
        _epilogue_at(sch, store, xo, isa.lanes)
    for loop in (rx, yi, xi):
        sch.unroll(loop)
    init = sch.decompose_reduction(block, rj)
    vectorize_inner(sch, init, isa.lanes)
    sch.tensorize(lane, use_intrin(isa.lanewise))


def _schedule_conv2d(sch: s_tir.Schedule, block: SBlockRV, isa: DotISA) -> None:
    """Loops ``b, y, x, g, o, r, l | ry, rx, rc`` (``x``: blocks of ``R`` pixels, ``o``: vectors)
    → ``b, par(y, g, o_out), x_out | ry, rx, rc_out | x_in, o_in, [r, l, rc_in] = intrinsic``
    with the padding stage computed per image, or ``par(g, o_out, b, y), ...`` when the
    weights are larger than an image."""
    pads, store = _around(sch, block)
    b, y, x, g, o, r, lane, ry, rx, rc = sch.get_loops(block)
    width, groups, vectors = extents(sch, [x, g, o])
    tile = pick_tile(width, vectors, isa.float_lanes, isa.registers)
    # A tile must not straddle two groups' outputs (its epilogue would read the other's).
    out_per_group = int(sch.get(store).writes[0].source.shape[-1]) // groups
    per_tile = groups == 1 or out_per_group % isa.lanes == 0
    xo, xi = _split_tile(sch, x, tile.rows, MAX_TILE_ROWS)
    oo, ov = _split_tile(sch, o, tile.nvec, MAX_TILE_VECTORS)
    rco, rci = sch.split(rc, [None, isa.group])
    weight_bytes = _nbytes(sch.get(block).reads[1].source)
    image_bytes = _nbytes(sch.get(block).reads[0].source) // extents(sch, [b])[0]
    if weight_bytes > image_bytes:
        # Weights outweigh an image: each thread takes a share of them, which serves the
        # whole batch while cached.
        sch.reorder(g, oo, b, y, xo, ry, rx, rco, xi, ov, r, lane, rci)
        sch.parallel(sch.fuse(g, oo, b, y))
        for pad in pads:
            _schedule_spatial(sch, pad, 64)
    else:  # image by image, each thread on a band of rows that it padded itself
        sch.reorder(b, y, g, oo, xo, ry, rx, rco, xi, ov, r, lane, rci)
        sch.parallel(sch.fuse(y, g, oo))
        for pad in pads:
            sch.compute_at(pad, b, preserve_unit_loops=True)
            _schedule_spatial(sch, pad, 64, shared=1)
    _finish(sch, block, store, xo if per_tile else None, ry, [xi, ov], r, lane, isa)


def _schedule_matmul(sch: s_tir.Schedule, block: SBlockRV, isa: DotISA) -> None:
    """Loops ``batch..., i, j, r, l | k`` (``i``: blocks of ``R`` rows, ``j``: vectors) →
    ``par(batch..., j_out, i_out) | k_out | i_in, j_in, [r, l, k_in] = intrinsic``."""
    pads, store = _around(sch, block)
    for pad in pads:
        _schedule_spatial(sch, pad, 64)
    *batch, i, j, r, lane, k = sch.get_loops(block)
    rows, vectors = extents(sch, [i, j])
    tile = pick_tile(rows, vectors, isa.float_lanes, isa.registers)
    io, ii = _split_tile(sch, i, tile.rows, MAX_TILE_ROWS)
    jo, jv = _split_tile(sch, j, tile.nvec, MAX_TILE_VECTORS)
    ko, ki = sch.split(k, [None, isa.group])
    sch.reorder(*batch, jo, io, ko, ii, jv, r, lane, ki)
    outer = sch.fuse(*batch, jo, io)
    sch.parallel(outer)
    _finish(sch, block, store, outer, ko, [ii, jv], r, lane, isa)


def _finish(sch: s_tir.Schedule, block: SBlockRV, store: SBlockRV, tile_loop: LoopRV | None, reduce: LoopRV,
            unrolled: list[LoopRV], row: LoopRV, lane: LoopRV, isa: DotISA) -> None:
    """Epilogue per tile (or after the whole reduction when ``tile_loop`` is None),
    accumulator initialisation, unrolling and tensorization (at the ``row`` loop of a
    matrix ISA's block, else at the ``lane`` loop)."""
    if not sch.get(store).same_as(sch.get(block)):
        if tile_loop is None:
            _schedule_spatial(sch, store, isa.float_lanes)
        else:
            _epilogue_at(sch, store, tile_loop, isa.float_lanes)
    for loop in unrolled:
        sch.unroll(loop)
    init = sch.decompose_reduction(block, reduce)
    init_row, init_lane = sch.get_loops(init)[-2:]
    sch.vectorize(sch.fuse(init_row, init_lane))
    sch.tensorize(row if isa.rows > 1 else lane, use_intrin(isa.intrin))


def _schedule_depthwise(sch: s_tir.Schedule, block: SBlockRV, isa: DotISA) -> None:
    """Loops ``b, y, x, c | ry, rx`` → ``par(b, c_out, y), x_out | ry | rx, x_in, c_vec, c_lane``."""
    lanes = isa.float_lanes
    pads, store = _around(sch, block)
    inline_injective(sch, pads)  # bounds checks on loads beat a padded copy here
    b, y, x, c, ry, rx = sch.get_loops(block)
    width, channels = extents(sch, [x, c])
    vec = lanes if channels % lanes == 0 else max(d for d in (8, 4, 2, 1) if channels % d == 0)
    tile = pick_tile(width, channels // vec, lanes, isa.registers)
    xo, xi = _split_tile(sch, x, tile.rows, MAX_TILE_ROWS)
    cvec, cl = sch.split(c, [None, vec])
    co, cv = _split_tile(sch, cvec, tile.nvec, MAX_TILE_VECTORS)
    sch.reorder(b, co, y, xo, ry, rx, xi, cv, cl)
    sch.parallel(sch.fuse(b, co, y))
    if not sch.get(store).same_as(sch.get(block)):
        _epilogue_at(sch, store, xo, lanes)
    for loop in (rx, xi, cv):  # unrolled: LLVM loads (and converts) each input vector once per tile row
        sch.unroll(loop)
    sch.vectorize(cl)
    init = sch.decompose_reduction(block, ry)
    vectorize_inner(sch, init, lanes)
