"""Injective functions (elementwise ops, broadcasts, transposes, reshapes, padding)."""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from .common import extents, inline_injective, iter_kinds, vector_isa, vectorize_inner

# Below this many output elements a function runs on one thread (a parallel launch costs
# about as much as copying this many floats).
PARALLEL_MIN_ELEMENTS = 16384


def schedule_elementwise(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    """Inline every block into the outputs, parallelize their outer loops, vectorize inside.

    Matches functions whose blocks are all spatial. The innermost loop is vectorized when
    its extent allows whole vectors (contiguous stores); the others are fused and run in
    parallel when the output is large enough.
    """
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    if any(set(iter_kinds(sch, b)) - {"S"} for b in blocks):
        return None
    inline_injective(sch, blocks[:-1])
    lanes = vector_isa(target).lanes(_dtype(sch, blocks[-1]))
    for block in sch.get_child_blocks(root):
        parallelize_outer(sch, block, keep_inner=1)
        vectorize_inner(sch, block, lanes)
    return sch


def parallelize_outer(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, keep_inner: int) -> None:
    """Fuse a block's loops except the ``keep_inner`` innermost ones and run them in parallel.

    Nothing happens for small outputs, where threads cost more than they save.
    """
    loops = sch.get_loops(block)
    outer = loops[: len(loops) - keep_inner]
    total = 1
    for ext in extents(sch, loops):
        total *= ext or PARALLEL_MIN_ELEMENTS
    if len(outer) == 0 or total < PARALLEL_MIN_ELEMENTS:
        return
    sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


def _dtype(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> str:
    return str(sch.get(block).writes[0].source.dtype)
