"""AArch64 integer dot-product tensor intrinsics: ``C[L] += A[G] (int8) · B[L, G] (int8)`` per lane.

Each intrinsic multiplies a group of ``G`` consecutive int8 activations (broadcast to every
lane) by ``L`` lanes × ``G`` int8 weights and adds the ``G`` products into ``L`` int32 lanes;
``smmla`` takes ``R = 2`` rows of activations at once (``C[R, L] += A[R, G] · B[L, G]^T``):

=========== === === === ============================================================= ==========
ISA          R   L   G  instructions                                                  features
=========== === === === ============================================================= ==========
``smmla``    2   2   8  ``smmla v.4s, v.16b, v.16b`` (Armv8.6 i8mm)                    i8mm
``sdot``     1   4   4  ``sdot v.4s, v.16b, v.16b`` (Armv8.2 dot product)             dotprod
``neon``     1   4   2  ``smull v.8h, v.8b, v.8b`` + ``sadalp v.4s, v.8h`` (Armv8.0)  neon
=========== === === === ============================================================= ==========

``smmla``'s accumulator is a 2 × 2 block, its operands two 8-byte rows: the kernels store
both as contiguous blocks (:mod:`targets.integer.kernels`), so each operand is one 16-byte
load and the accumulator one register.

``smull`` widens 8 products to int16 exactly (``|-128 · -128| < 2^15``) and ``sadalp`` adds
adjacent pairs into the int32 accumulators: bit-exact, unlike the saturating ``sqdmlal``.
Activations and weights are both signed, so the targets quantize symmetrically (``int8_sym``).
"""
from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ..integer.isa import DotISA, dot_desc, register_isa


def _sdot_impl():
    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                C.vload([0], dtype="int32x4"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4), dtype="int8x16"),
                B.vload([0, 0], dtype="int8x16"), dtype="int32x4")

    return impl


def _smull_sadalp_impl():
    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 2), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:2], B[0:4, 0:2])
            T.writes(C[0:4])
            C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], dtype="int32x4") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"),
                    T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x2"), dtype="int16"), 4),
                                  dtype="int8x8"),
                    B.vload([0, 0], dtype="int8x8"), dtype="int16x8"),
                dtype="int32x4")

    return impl


def _smmla_impl():
    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2, 8), "int8", offset_factor=1)
        B = T.match_buffer(b, (2, 8), "int8", offset_factor=1)
        C = T.match_buffer(c, (2, 2), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:2, 0:2], A[0:2, 0:8], B[0:2, 0:8])
            T.writes(C[0:2, 0:2])
            C.vstore([0, 0], T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smmla.v4i32.v16i8"),
                C.vload([0, 0], dtype="int32x4"), A.vload([0, 0], dtype="int8x16"),
                B.vload([0, 0], dtype="int8x16"), dtype="int32x4"))

    return impl


SMMLA = register_isa(DotISA("smmla", 2, 8, "int8", "int8", "squeeze_mmla_2x2x8_smmla", registers=32,
                            vector_bytes=16, features=("neon", "i8mm"), instruction="smmla", rows=2))
SDOT = register_isa(DotISA("sdot", 4, 4, "int8", "int8", "squeeze_dot_4x4_sdot", registers=32, vector_bytes=16,
                           features=("neon", "dotprod"), instruction="sdot"))
NEON = register_isa(DotISA("neon", 4, 2, "int8", "int8", "squeeze_dot_4x2_smull", registers=32, vector_bytes=16,
                           features=("neon",), instruction="smull+sadalp"))
ISAS = (SMMLA, SDOT, NEON)  # best first

TensorIntrin.register(SMMLA.intrin, dot_desc(2, 8, "int8", "int8", rows=2), _smmla_impl(), override=True)
TensorIntrin.register(SDOT.intrin, dot_desc(4, 4, "int8", "int8"), _sdot_impl(), override=True)
TensorIntrin.register(NEON.intrin, dot_desc(4, 2, "int8", "int8"), _smull_sadalp_impl(), override=True)
