"""AArch64 integer dot-product tensor intrinsics: ``C[L] += A[G] · B[L, G]`` per lane, 8-bit operands.

Each intrinsic multiplies a group of ``G`` consecutive 8-bit activations (broadcast to every
lane) by ``L`` lanes × ``G`` 8-bit weights and adds the ``G`` products into ``L`` int32 lanes;
the matrix instructions take ``R = 2`` rows of activations at once (``C[R, L] += A[R, G] · B[L, G]^T``):

=========== === === === ====== ============================================================ ========
ISA          R   L   G  A × B  instructions                                                 features
=========== === === === ====== ============================================================ ========
``smmla``    2   2   8  s8×s8  ``smmla v.4s, v.16b, v.16b`` (Armv8.6 i8mm)                   i8mm
``ummla``    2   2   8  u8×u8  ``ummla v.4s, v.16b, v.16b`` (Armv8.6 i8mm)                   i8mm
``sdot``     1   4   4  s8×s8  ``sdot v.4s, v.16b, v.16b`` (Armv8.2 dot product)            dotprod
``udot``     1   4   4  u8×u8  ``udot v.4s, v.16b, v.16b`` (Armv8.2 dot product)            dotprod
``neon``     1   4   2  s8×s8  ``smull v.8h, v.8b, v.8b`` + ``sadalp v.4s, v.8h`` (Armv8.0)  neon
=========== === === === ====== ============================================================ ========

The signed ISAs take the symmetric scheme's int8 activations (``int8_sym``), the unsigned ones
the asymmetric scheme's uint8 activations (``int8``: a ReLU output uses all 256 codes) without a
shift; their int8 weights are packed as ``w + 128`` and the legalization subtracts ``128 · Σ x``
over each window (:mod:`targets.integer.legalize`).

The matrix instructions' accumulator is a 2 × 2 block, their operands two 8-byte rows: the
kernels store both as contiguous blocks (:mod:`targets.integer.kernels`), so each operand is one
16-byte load and the accumulator one register.

``smull`` widens 8 products to int16 exactly (``|-128 · -128| < 2^15``) and ``sadalp`` adds
adjacent pairs into the int32 accumulators: bit-exact, unlike the saturating ``sqdmlal``.
"""
from __future__ import annotations

from typing import Callable

from tvm import tirx
from tvm.script import tirx as T

from ..integer.isa import DotISA, define_intrin, dot_desc, register_isa


def _dot_impl(dtype: str, llvm_name: str):
    """``sdot`` / ``udot``: the 4-byte activation group broadcast to the 4 lanes."""
    group, vec = f"{dtype}x4", f"{dtype}x16"

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), dtype, offset_factor=1)
        B = T.match_buffer(b, (4, 4), dtype, offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name), C.vload([0], dtype="int32x4"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], group), dtype="int32"), 4), dtype=vec),
                B.vload([0, 0], dtype=vec), dtype="int32x4")

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


def _mmla_impl(dtype: str, llvm_name: str):
    """``smmla`` / ``ummla``: two 8-byte activation rows × two 8-byte weight rows."""
    vec = f"{dtype}x16"

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2, 8), dtype, offset_factor=1)
        B = T.match_buffer(b, (2, 8), dtype, offset_factor=1)
        C = T.match_buffer(c, (2, 2), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:2, 0:2], A[0:2, 0:8], B[0:2, 0:8])
            T.writes(C[0:2, 0:2])
            C.vstore([0, 0], T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name), C.vload([0, 0], dtype="int32x4"),
                A.vload([0, 0], dtype=vec), B.vload([0, 0], dtype=vec), dtype="int32x4"))

    return impl


def _register(isa: DotISA, impl: Callable[[], tirx.PrimFunc]) -> DotISA:
    """Register ``isa`` and declare its tensor intrinsic (description :func:`dot_desc`, implementation ``impl()``)."""
    define_intrin(isa.intrin, lambda: (dot_desc(isa.lanes, isa.group, isa.act_dtype, isa.weight_dtype, rows=isa.rows),
                                       impl()))
    return register_isa(isa)


def _mmla(name: str, dtype: str) -> DotISA:
    return _register(DotISA(name, 2, 8, dtype, dtype, f"squeeze_mmla_2x2x8_{name}", registers=32, vector_bytes=16,
                            features=("neon", "i8mm"), instruction=name, rows=2),
                     lambda: _mmla_impl(dtype, f"llvm.aarch64.neon.{name}.v4i32.v16i8"))


def _dot(name: str, dtype: str) -> DotISA:
    return _register(DotISA(name, 4, 4, dtype, dtype, f"squeeze_dot_4x4_{name}", registers=32, vector_bytes=16,
                            features=("neon", "dotprod"), instruction=name),
                     lambda: _dot_impl(dtype, f"llvm.aarch64.neon.{name}.v4i32.v16i8"))


SMMLA, UMMLA = _mmla("smmla", "int8"), _mmla("ummla", "uint8")
SDOT, UDOT = _dot("sdot", "int8"), _dot("udot", "uint8")
NEON = _register(DotISA("neon", 4, 2, "int8", "int8", "squeeze_dot_4x2_smull", registers=32, vector_bytes=16,
                        features=("neon",), instruction="smull+sadalp"), _smull_sadalp_impl)
ISAS = (SMMLA, SDOT, NEON)  # int8 activations, best first
UNSIGNED_ISAS = (UMMLA, UDOT)  # uint8 activations, best first
