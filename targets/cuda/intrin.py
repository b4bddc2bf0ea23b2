"""The tensor intrinsics of the int8 tensor-core GEMM: TVM's ``ldmatrix`` / ``mma.sync.m16n8k32``
group for int8, plus a store of the int32 accumulators to shared memory (for the fused epilogue),
which TVM registers only for float types, and the ``ldmatrix`` loads from dynamic shared memory.
"""
from __future__ import annotations

import functools

from tvm.s_tir import TensorIntrin

SHARED = "shared.dyn"  # one dynamic allocation: TVM reuses the staging buffers for the epilogue tile
MMA_PTX = "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32"  # what the PTX of the GEMM holds


def _stock():
    # imported on first use: tvm.s_tir.tensor_intrin registers every target's intrinsics on import
    # (~50 s here), which no compile for a CPU target should pay
    from tvm.s_tir.tensor_intrin import cuda

    return cuda


@functools.cache
def intrinsics() -> dict[str, str]:
    """The names of the GEMM's tensor intrinsics, registered on the first call."""
    cuda = _stock()
    registered = {
        "load_a": ("squeeze_ldmatrix_i8_a_dyn", cuda.get_ldmatrix_intrin(32, "int8", "A", False, SHARED)),
        "load_b": ("squeeze_ldmatrix_i8_b_trans_dyn", cuda.get_ldmatrix_intrin(32, "int8", "B", True, SHARED)),
        "store_shared": ("squeeze_mma_store_16x16_i32_shared_dyn", cuda.get_mma_store_intrin("int32", 8, SHARED, False)),
    }
    for name, impl in registered.values():
        TensorIntrin.register(name, *impl, override=True)
    group = cuda.get_mma_intrin_group("shared", "global", "int8", "int32", False, True, False)
    return {
        "init": group["init"],  # mma_fill_16x16_i32
        "compute": group["compute"],  # two mma.sync.m16n8k32.row.col.s32.s8.s8.s32
        "store_global": group["store"],
        **{key: name for key, (name, _) in registered.items()},  # ldmatrix of 16 x 32 int8 tiles of A[M, K], W[N, K]
    }


def fragment_a(i, j):
    """Index map of a ``[rows, K]`` int8 operand into per-thread ``ldmatrix`` fragments."""
    return (i // 16, j // 32, *_stock().shared_16x32_to_ldmatrix_32x16_layout(i % 16, j % 32))


def fragment_c(i, j):
    """Index map of the int32 accumulators into per-thread ``m16n16`` fragments."""
    return (i // 16, j // 16, *_stock().shared_16x16_to_ldmatrix_32x8_layout(i % 16, j % 16))
