"""Helpers shared by the CPU schedule rules: vector unit facts, block analysis, tiling."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV, ScheduleError
from tvm.target.codegen import llvm_get_cpu_features


@dataclass(frozen=True)
class VectorISA:
    """The SIMD unit the schedules target.

    Attributes
    ----------
    bits : int
        Width of the widest vector register.
    registers : int
        Number of architectural vector registers.
    broadcast_operand : bool
        Whether an instruction takes a memory word broadcast to all lanes as an operand
        (AVX-512's embedded broadcast), so a broadcast costs no register and no instruction.
    """

    bits: int
    registers: int
    broadcast_operand: bool = False

    def lanes(self, dtype: str) -> int:
        """Elements of ``dtype`` per vector register."""
        return max(1, self.bits // tvm.DataType(dtype).bits)


def vector_isa(target: tvm.target.Target) -> VectorISA:
    """Read the vector width and register count from the target's CPU features."""
    feats = {str(f) for f in llvm_get_cpu_features(target)}
    if "avx512f" in feats:
        return VectorISA(512, 32, broadcast_operand=True)
    if "avx" in feats:
        return VectorISA(256, 16)
    if "neon" in feats:  # AArch64 Advanced SIMD: 32 registers of 128 bits
        return VectorISA(128, 32)
    return VectorISA(128, 16)


def iter_kinds(sch: s_tir.Schedule, block: SBlockRV) -> str:
    """Iterator kinds of a block, e.g. ``"SSSSRRR"`` (S spatial, R reduction, O other)."""
    kinds = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(kinds.get(iv.iter_type, "O") for iv in sch.get(block).iter_vars)


def extents(sch: s_tir.Schedule, loops: list[LoopRV]) -> list[int | None]:
    """Constant extents of ``loops`` (None where symbolic)."""
    out = []
    for loop in loops:
        ext = sch.get(loop).extent
        out.append(int(ext) if isinstance(ext, tirx.IntImm) else None)
    return out


def divisor_at_most(n: int, cap: int) -> int:
    """Largest divisor of ``n`` not above ``cap`` (at least 1)."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def vectorize_inner(sch: s_tir.Schedule, block: SBlockRV, lanes: int) -> None:
    """Vectorize a block's innermost loop, split to ``lanes`` when longer.

    The split is exact when ``lanes`` divides the extent; otherwise the largest
    divisor not above ``lanes`` is used, or the loop stays scalar when that is 1. A loop
    that also encloses other blocks (e.g. one shared through ``compute_at``) is left
    alone: TVM's vectorizer does not handle nested blocks correctly.
    """
    loops = sch.get_loops(block)
    if not loops or len(sch.get_child_blocks(loops[-1])) != 1:
        return
    (ext,) = extents(sch, loops[-1:])
    if ext is None or ext < 2:
        return
    vec = divisor_at_most(ext, lanes)
    if vec < 2:
        return
    if vec < ext:
        loops = sch.split(loops[-1], [None, vec])
    sch.vectorize(loops[-1])


def inline_injective(sch: s_tir.Schedule, blocks: list[SBlockRV]) -> None:
    """Inline every block of ``blocks`` into its consumer where TIR allows it."""
    for block in blocks:
        try:
            sch.compute_inline(block)
        except ScheduleError:
            continue


@dataclass(frozen=True)
class Contraction:
    """A PrimFunc made of injective producers, one reduction block, injective consumers."""

    producers: list[SBlockRV]
    main: SBlockRV
    consumers: list[SBlockRV]


def find_contraction(sch: s_tir.Schedule, kinds: str) -> Contraction | None:
    """Split the root blocks around the one reduction block whose iterators match ``kinds``.

    Returns None unless the function has exactly one non-injective block, its iterator
    kinds fully match the regular expression ``kinds`` (e.g. ``"S{2,}R"``), it has one
    loop per iterator, it writes its spatial iterators in order and every other block is
    injective.
    """
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    reductions = [i for i, b in enumerate(blocks) if "R" in iter_kinds(sch, b)]
    if len(reductions) != 1:
        return None
    (at,) = reductions
    main = blocks[at]
    found = iter_kinds(sch, main)
    if not re.fullmatch(kinds, found) or len(sch.get_loops(main)) != len(found):
        return None
    stmt = sch.get(main)
    spatial = [iv.var for iv in stmt.iter_vars if iv.iter_type == tirx.IterVar.DataPar]
    written = [r.min for r in stmt.writes[0].region]
    if len(written) != len(spatial) or not all(w.same_as(v) for w, v in zip(written, spatial)):
        return None
    if any(set(iter_kinds(sch, b)) - {"S"} for b in blocks if b != main):
        return None
    return Contraction(blocks[:at], main, blocks[at + 1:])


def uses_var(expr: tirx.PrimExpr, var: tirx.Var) -> bool:
    """Whether ``var`` occurs in ``expr``."""
    return any(v.same_as(var) for v in tirx.analysis.undefined_vars(expr))


def is_multiply_accumulate(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    """Whether a reduction block computes ``C = C + A * B`` (casts allowed)."""
    body = sch.get(block).body
    if not isinstance(body, tirx.BufferStore):  # e.g. ArgMax: a reduction over (index, value) pairs
        return False
    value = body.value
    if not isinstance(value, tirx.Add):
        return False
    product = value.b
    while isinstance(product, tirx.Cast):
        product = product.value
    return isinstance(product, tirx.Mul)


# TVM places CPU buffers below this size on the stack (LLVM then keeps them in registers);
# larger ones, and all "local"-scope ones, go through TVMBackendAllocWorkspace.
MAX_STACK_BYTES = 1024


@dataclass(frozen=True)
class RegisterTile:
    """Output tile kept in vector registers: ``rows`` × (``nvec`` × ``vec``) elements."""

    rows: int
    nvec: int
    vec: int


def predicated_columns(cols: int, lanes: int) -> bool:
    """Whether :func:`pick_register_tile` falls back to whole registers, the last one predicated,
    for ``cols``: more than a register and no power of two of at least 4 dividing them (a prime
    channel count, 8,210 classes)."""
    return cols > lanes and (cols & -cols) < 4


def pick_register_tile(rows: int, cols: int, isa: VectorISA, dtype: str) -> RegisterTile:
    """Choose a register tile for an output of ``rows`` × ``cols`` (cols contiguous).

    The vector length is the largest power of two dividing ``cols`` within a register
    (all of ``cols`` when it fits one register; a full register, the last one predicated,
    when ``cols`` has no factor 4); rows and vector counts are divisors of the extents. Among the tiles that fit three quarters of the register
    file and TVM's stack-allocation limit, the one with the best FMA-per-load ratio (at
    least 8 accumulators to hide FMA latency) wins, then the largest.
    """
    lanes = isa.lanes(dtype)
    vec = min(cols & -cols, lanes)  # largest power of two dividing cols
    if cols <= lanes:
        vec = cols
    elif predicated_columns(cols, lanes):
        vec = lanes
    nvecs = -(-cols // vec)
    itemsize = tvm.DataType(dtype).bits // 8
    budget = min(isa.registers * 3 // 4, (MAX_STACK_BYTES - 1) // (vec * itemsize))
    best, best_key = RegisterTile(1, 1, vec), None
    for nv in (d for d in range(1, min(nvecs, budget) + 1) if nvecs % d == 0):
        if cols % vec and nv > 1:
            break
        for r in (d for d in range(1, min(rows, budget // nv) + 1) if rows % d == 0):
            acc = r * nv
            key = (acc / max(acc, r + nv, 8), acc, -(r + nv))
            if best_key is None or key > best_key:
                best, best_key = RegisterTile(r, nv, vec), key
    return best


def schedule_contraction(sch: s_tir.Schedule, op: Contraction, tile: RegisterTile) -> None:
    """Register-tile a contraction whose main block's loops are ``[S..., row, col, R...]``.

    Loop order becomes ``parallel(col_o, S..., row_o), R..., row_i, col_m, col_v``: the
    outer tiles run in parallel (column tiles outermost so that a weight panel stays in
    cache while the rows stream by), the reduction runs in the middle and the register
    tile ``row_i × col_m × col_v`` is unrolled and vectorized innermost. The accumulator
    is a tile-sized stack buffer (registers, once LLVM promotes it); the epilogue
    (consumers inlined into the last one) stores it, vectorized, right after each tile.
    The reduction init is decomposed last: parallelizing or vectorizing after
    ``decompose_reduction`` fails ("does not have compact dataflow").
    """
    inline_injective(sch, op.consumers[:-1])
    store = accumulator_store(sch, op)
    block = op.main
    loops = sch.get_loops(block)
    ns = len(loops) - iter_kinds(sch, block).count("R")  # spatial loops (some may be fused)
    *outer, row, col = loops[:ns]
    reduce = loops[ns:]
    row_o, row_i = sch.split(row, [None, tile.rows])
    col_o, col_m, col_v = sch.split(col, [None, tile.nvec, tile.vec])
    sch.reorder(col_o, *outer, row_o, *reduce, row_i, col_m, col_v)
    # A serial unit loop inside the parallel one lets the accumulator be allocated per tile.
    par, tile_loop = sch.split(sch.fuse(col_o, *outer, row_o), [None, 1])
    sch.parallel(par)
    sch.unroll(row_i)
    sch.unroll(col_m)
    sch.vectorize(col_v)
    sch.reverse_compute_at(store, tile_loop)
    vectorize_inner(sch, store, tile.vec)
    init = sch.decompose_reduction(block, reduce[0])
    vectorize_inner(sch, init, tile.vec)


def accumulator_store(sch: s_tir.Schedule, op: Contraction) -> SBlockRV:
    """Make the reduction accumulate in a tile-sized buffer; return the block storing it.

    With consumers the intermediate buffer is the accumulator (compacted to the tile
    during lowering; a stack buffer that LLVM keeps in registers) and the last consumer
    stores the result; without, a cache is written back by a new block.
    """
    if op.consumers:
        return op.consumers[-1]
    return sch.cache_write(op.main, 0, "global")


LAYOUT_REWRITE = "meta_schedule.layout_rewrite_preproc"


def constant_params(func: tirx.PrimFunc) -> set[int]:
    """Indices of the parameters bound to weights (``layout_free_buffers`` attribute)."""
    attrs = func.attrs or {}
    return {int(i) for i in attrs.get("layout_free_buffers", [])}


def pack_operand(sch: s_tir.Schedule, block: SBlockRV, func: tirx.PrimFunc, panel: int) -> None:
    """Re-lay the matrix operand that ``block`` reads along its output columns as panels.

    An operand ``W[..., j, ...]`` indexed by the block's innermost spatial iterator ``j``
    becomes ``W'[j // panel, ..., j % panel]``: the tile loops then read one contiguous
    ``panel``-wide row per reduction step. A constant parameter of ``func`` (a weight) is
    copied by a block marked for ``relax.transform.SplitLayoutRewritePreproc``, so the
    copy is folded at compile time; another operand is copied at run time only when
    ``j`` is not already its contiguous axis (e.g. ``A @ B.T``).
    """
    constants = [p for i, p in enumerate(func.params) if i in constant_params(func)]
    col_var = sch.get(block).iter_vars[iter_kinds(sch, block).rindex("S")].var
    for index, region in enumerate(sch.get(block).reads):
        buf, starts = region.source, [r.min for r in region.region]
        axes = [a for a, e in enumerate(starts) if e.same_as(col_var)]
        if len(starts) < 2 or len(axes) != 1 or int(buf.shape[axes[0]]) % panel:
            continue
        (axis,) = axes
        constant = any(buf.same_as(p) for p in constants)
        contiguous = axis == len(starts) - 1
        if contiguous and (not constant or int(buf.shape[axis]) == panel):
            continue
        copy = sch.cache_read(block, index, "global")
        sch.transform_layout(block, ("read", index), _panel_map(axis, panel))
        if constant:
            sch.annotate(copy, LAYOUT_REWRITE, True)


def _panel_map(axis: int, panel: int) -> Callable[..., tuple]:
    """Index map moving ``axis`` out into ``(axis // panel, ..., axis % panel)``."""

    def mapping(*ax: tirx.Var) -> tuple:
        return (ax[axis] // panel, *ax[:axis], *ax[axis + 1:], ax[axis] % panel)

    return mapping
