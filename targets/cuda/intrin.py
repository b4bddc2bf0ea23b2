"""The tensor intrinsics of the int8 tensor-core GEMM: TVM's ``ldmatrix`` / ``mma.sync.m16n8k32``
group for int8, plus a store of the int32 accumulators to shared memory (for the fused epilogue),
which TVM registers only for float types, and the ``ldmatrix`` loads from dynamic shared memory.
"""
from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.s_tir.tensor_intrin import cuda as _cuda  # registers TVM's mma / ldmatrix intrinsics

SHARED = "shared.dyn"  # one dynamic allocation: TVM reuses the staging buffers for the epilogue tile
_REGISTERED = {
    "load_a": ("squeeze_ldmatrix_i8_a_dyn", _cuda.get_ldmatrix_intrin(32, "int8", "A", False, SHARED)),
    "load_b": ("squeeze_ldmatrix_i8_b_trans_dyn", _cuda.get_ldmatrix_intrin(32, "int8", "B", True, SHARED)),
    "store_shared": ("squeeze_mma_store_16x16_i32_shared_dyn", _cuda.get_mma_store_intrin("int32", 8, SHARED, False)),
}
for _name, _impl in _REGISTERED.values():
    TensorIntrin.register(_name, *_impl, override=True)

_group = _cuda.get_mma_intrin_group("shared", "global", "int8", "int32", False, True, False)
INTRINSICS = {
    "init": _group["init"],  # mma_fill_16x16_i32
    "compute": _group["compute"],  # two mma.sync.m16n8k32.row.col.s32.s8.s8.s32
    "store_global": _group["store"],
    **{key: name for key, (name, _) in _REGISTERED.items()},  # ldmatrix of 16 x 32 int8 tiles of A[M, K], W[N, K]
}
MMA_PTX = "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32"  # what the PTX of the GEMM holds


def fragment_a(i, j):
    """Index map of a ``[rows, K]`` int8 operand into per-thread ``ldmatrix`` fragments."""
    return (i // 16, j // 32, *_cuda.shared_16x32_to_ldmatrix_32x16_layout(i % 16, j % 32))


def fragment_c(i, j):
    """Index map of the int32 accumulators into per-thread ``m16n16`` fragments."""
    return (i // 16, j // 16, *_cuda.shared_16x16_to_ldmatrix_32x8_layout(i % 16, j % 16))
