"""Schedules of the CUDA integer kernels (:mod:`.kernels`) inside their fused PrimFuncs.

Tensor-core GEMM (``gemm`` blocks), per thread block of ``block_m × block_n`` outputs:

- ``A`` (the implicit im2col matrix, its stage inlined: read straight from the NHWC input) and
  the packed ``W`` are staged in shared memory ``chunk_k`` at a time with ``cp.async``, in a
  software pipeline of ``stages`` buffers (double buffering: the copy of chunk ``k + 1`` runs
  while the warps multiply chunk ``k``);
- each warp loads its ``16 × 32`` fragments with ``ldmatrix`` and accumulates
  ``warp_m × warp_n`` outputs in registers with ``mma.sync.m16n8k32.s8`` (two per ``m16n16``);
- the accumulators go to shared memory and the whole fused epilogue (crop, bias, requantize,
  ReLU/clip, residual add, int8 cast) runs on the block's tile, so the int32 tensor never
  reaches global memory.

Grouped / depthwise convs (``direct`` blocks) run one output per thread on CUDA cores, their
epilogue inlined. Everything else gets TVM's dlight GPU rules (:func:`gpu_fallback`).
"""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.schedule import SBlockRV, ScheduleError

from ..schedules import RULE_ATTR
from ..integer.schedule import _around
from ..schedules.common import inline_injective
from .intrin import SHARED, fragment_a, fragment_c, intrinsics
from .kernels import KERNEL_ATTR, TILE_ATTR, VECTOR_ATTR, GemmTile

ASYNC_COPY = {"tirx.use_async_copy": True}  # PassContext config: pipelined copies become cp.async
THREADS = 256  # threads per block of the CUDA-core kernels and epilogue-only loops


def kernel_block(sch: s_tir.Schedule) -> tuple[SBlockRV, str] | None:
    """The CUDA integer kernel block of the function and its kind, if any."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        kind = sch.get(block).annotations.get(KERNEL_ATTR)
        if kind is not None:
            return block, str(kind)
    return None


def _bind_flat(sch: s_tir.Schedule, block: SBlockRV, ndim: int, warps: int, vector: int) -> None:
    """Fuse a block's last ``ndim`` loops and spread them over ``warps`` warps, ``vector``
    elements per thread (vectorized)."""
    fused = sch.fuse(*sch.get_loops(block)[-ndim:])
    _, ty, tx, vec = sch.split(fused, [None, warps, 32, vector])
    sch.bind(tx, "threadIdx.x")
    sch.bind(ty, "threadIdx.y")
    sch.vectorize(vec)


def schedule_gemm(sch: s_tir.Schedule, block: SBlockRV, tile: GemmTile) -> None:
    """Tensor-core schedule of the ``gemm`` block (loops ``i, j | k``) and its epilogue, in place."""
    producers, store = _around(sch, block)
    fused_epilogue = not sch.get(store).same_as(sch.get(block))
    a_vector = int(sch.get(block).annotations.get(VECTOR_ATTR, 16))
    i, j, k = sch.get_loops(block)
    i, i_frag = sch.split(i, [None, 16])
    j, j_frag = sch.split(j, [None, 16])
    k, k_frag = sch.split(k, [None, 32])
    sch.reorder(i, j, k, i_frag, j_frag, k_frag)
    inner, outer = block, sch.blockize(i_frag)
    i0, i1, i2 = sch.split(i, [None, tile.block_m // tile.warp_m, tile.warp_m // 16])
    j0, j1, j2 = sch.split(j, [None, tile.block_n // tile.warp_n, tile.warp_n // 16])
    k0, k1 = sch.split(k, [None, tile.chunk_k // 32])
    sch.reorder(j0, i0, i1, j1, k0, k1, i2, j2)
    block_loop = sch.fuse(j0, i0)  # consecutive blocks share a weight tile
    sch.bind(block_loop, "blockIdx.x")
    warp = sch.fuse(i1, j1)
    sch.bind(warp, "threadIdx.y")

    for index in (0, 1):  # A (im2col) and W through shared memory, 16 bytes per thread and copy
        staged = sch.cache_read(outer, index, SHARED)
        sch.compute_at(staged, k0)
        _bind_flat(sch, staged, 2, tile.warps, 16 if index else a_vector)
        sch.storage_align(staged, 0, axis=-2, factor=32, offset=16)  # ldmatrix without bank conflicts
    for producer in producers:
        sch.compute_inline(producer)  # the im2col stage: read from the input by the copy itself
    a_frag, w_frag = sch.cache_read(outer, 0, "warp"), sch.cache_read(outer, 1, "warp")
    sch.compute_at(a_frag, k1)
    sch.compute_at(w_frag, k1)
    acc = sch.cache_write(outer, 0, "warp")
    sch.reverse_compute_at(acc, warp)
    ii, jj = sch.get_loops(acc)[-2:]
    io, ii = sch.split(ii, [None, 16])
    jo, ji = sch.split(jj, [None, 16])
    sch.reorder(io, jo, ii, ji)
    if fused_epilogue:  # accumulators → shared memory; the epilogue reads the block's tile there
        sch.set_scope(acc, 0, SHARED)
        sch.reverse_compute_at(store, block_loop)
        _bind_flat(sch, store, len(sch.get_loops(store)) - 1, tile.warps, 4)
    sch.decompose_reduction(outer, sch.get_loops(outer)[2])
    init = sch.get_sblock(f"{sch.get(inner).name_hint}_init")
    sch.transform_layout(a_frag, ("write", 0), fragment_a)
    sch.transform_layout(w_frag, ("write", 0), fragment_a)  # W[N, K] is laid out like A[M, K]
    sch.transform_layout(acc, ("read", 0), fragment_c)
    sch.tensorize(_fragment_loop(sch, a_frag), intrinsics()["load_a"])
    sch.tensorize(_fragment_loop(sch, w_frag), intrinsics()["load_b"])
    sch.tensorize(sch.get_loops(inner)[-3], intrinsics()["compute"])
    sch.tensorize(sch.get_loops(init)[-2], intrinsics()["init"])
    sch.tensorize(sch.get_loops(acc)[-2], intrinsics()["store_shared" if fused_epilogue else "store_global"])
    stages = [0, 0, tile.stages - 1]  # copies of A and W run stages - 1 chunks ahead of the MMAs
    sch.annotate(k0, "software_pipeline_stage", stages)
    sch.annotate(k0, "software_pipeline_order", [0, 1, 2])
    sch.annotate(k0, "software_pipeline_async_stages", [0])


def _fragment_loop(sch: s_tir.Schedule, block: SBlockRV):
    """Tile a fragment copy's loops by ``16 × 32`` and return the loop ``ldmatrix`` replaces."""
    rows, cols = sch.get_loops(block)[-2:]
    r0, r1 = sch.split(rows, [None, 16])
    c0, c1 = sch.split(cols, [None, 32])
    sch.reorder(r0, c0, r1, c1)
    return r1


def schedule_direct(sch: s_tir.Schedule, block: SBlockRV) -> None:
    """CUDA-core schedule of a ``direct`` conv: one output per thread, epilogue inlined."""
    producers, store = _around(sch, block)
    inline_injective(sch, producers)
    if not sch.get(store).same_as(sch.get(block)):
        try:
            sch.reverse_compute_inline(store)
        except ScheduleError:  # keep the epilogue as its own loop
            _bind_threads(sch, store)
    b, y, x, c, *_ = sch.get_loops(block)
    fused = sch.fuse(b, y, x, c)
    bx, tx = sch.split(fused, [None, THREADS])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


def _bind_threads(sch: s_tir.Schedule, block: SBlockRV) -> None:
    fused = sch.fuse(*sch.get_loops(block))
    bx, tx = sch.split(fused, [None, THREADS])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


def schedule_cuda(func: tirx.PrimFunc, target: tvm.target.Target | None = None) -> s_tir.Schedule | None:
    """Schedule a fused PrimFunc around a CUDA integer kernel (None if it holds none)."""
    sch = s_tir.Schedule(func)
    found = kernel_block(sch)
    if found is None:
        return None
    block, kind = found
    if kind == "gemm":
        schedule_gemm(sch, block, GemmTile.from_key(sch.get(block).annotations[TILE_ATTR]))
    else:
        schedule_direct(sch, block)
    return sch


def gpu_fallback() -> tvm.transform.Pass:
    """dlight's GPU rules for every PrimFunc no integer kernel scheduled (float islands, pools,
    reductions, elementwise ops)."""
    return dlight.ApplyDefaultSchedule(dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(),
                                       dlight.gpu.GeneralReduction(), dlight.gpu.Fallback())


def schedule(target: tvm.target.Target) -> tvm.transform.Pass:
    """``TargetSpec.schedule``: the integer kernels first, then dlight for the rest."""
    rest = gpu_fallback()

    @tvm.transform.module_pass(opt_level=0, name="squeeze.cuda_schedule")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, tirx.PrimFunc) and not (func.attrs or {}).get("tirx.is_scheduled", False):
                sch = schedule_cuda(func, target)
                if sch is not None:
                    mod[gvar] = sch.mod["main"].with_attrs({"tirx.is_scheduled": True, RULE_ATTR: "schedule_cuda"})
        with target:
            return rest(mod)

    return _pass
