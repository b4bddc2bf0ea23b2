"""x86 integer dot-product tensor intrinsics: ``C[L] += A[G] (uint8) · B[L, G]`` per lane.

Each intrinsic multiplies a group of ``G`` consecutive uint8 activations (broadcast to every
lane) by ``L`` lanes × ``G`` weights and adds the ``G`` products into ``L`` int32 lanes:

========== === === ====== ================================================================
ISA         L   G  weight  instruction
========== === === ====== ================================================================
``vnni``    16  4  int8    ``vpdpbusd zmm`` (AVX512_VNNI)
``avx512``  16  2  int16   ``vpmaddwd zmm`` (AVX-512BW), weights widened at compile time
``avx2``    8   2  int16   ``vpmaddwd ymm`` (AVX2)
``vnni_w4`` 16  8  int4    two ``vpdpbusd zmm``, weights two per byte unpacked in registers
``vnni_w2`` 16  16 int2    four ``vpdpbusd zmm``, weights four per byte
========== === === ====== ================================================================

``vnni`` also has a lane-wise form (``squeeze_lanewise_16x4_vnni``: 16 words of 4 activation bytes,
no broadcast), which the depthwise kernel of :mod:`..integer.depthwise_dot` runs on.

``vnni_w4`` / ``vnni_w2`` serve layers whose weights fit 4 / 2 bits (int4 and ternary schemes, low-bit
QDQ/QONNX models): one 64-byte load holds two (four) groups of weights as fields ``w + 8``
(``w + 2``), split by ``vpand`` (after ``vpsrlw``), and the legalization subtracts ``8 · Σ x``
(``2 · Σ x``). Half (a quarter of) the weight bytes of ``vnni``: what a memory-bound
matrix-vector product at batch 1 needs, and what the artifact stores.

The fallbacks widen weights to int16 (a compile-time re-layout) rather than using
``vpmaddubsw``: that instruction saturates pairs of products to int16
(255·127·2 > 32767), which would break bit-exactness with the integer reference.

TVM's stock ``dot_16x4_vnni`` passes ``<16 x i32>`` operands to ``llvm.x86.avx512.vpdpbusd.512``,
which the bundled LLVM 22 rejects (it wants ``<64 x i8>``). :func:`fix_stock_vnni` re-registers
that name with the correct implementation for MetaSchedule's VNNI rules; it imports
``tvm.s_tir.tensor_intrin`` (~15 s), so only tuning calls it.
"""
from __future__ import annotations

from functools import cache

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ..integer.isa import DotISA, define_intrin, dot_desc, lanewise_desc, packed_desc, register_isa


def _vnni_impl(lanewise: bool = False):
    """``vpdpbusd``: 4 activation bytes broadcast to the 16 lanes, or (``lanewise``, the depthwise
    kernel's) 16 words of 4 activation bytes each."""
    extent, dtype = (16, "uint32") if lanewise else (4, "uint8")

    def activations(A):
        if lanewise:
            return T.reinterpret(A.vload([0], dtype="uint32x16"), dtype="uint8x64")
        return T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16), dtype="uint8x64")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (extent,), dtype, offset_factor=1)
        B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (16,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:16], A[0:extent], B[0:16, 0:4])
            T.writes(C[0:16])
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), C.vload([0], dtype="int32x16"),
                activations(A), B.vload([0, 0], dtype="int8x64"), dtype="int32x16")

    return impl


def _vnni_packed_impl(bits: int):
    """``vpdpbusd`` on weights ``8 / bits`` per byte: one 64-byte load, each field masked out
    (after a shift) and multiplied with its 4 activations."""
    group, fields, mask = 32 // bits, 8 // bits, (1 << bits) - 1

    def dot(acc, a, w):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), acc,
                                       T.reinterpret(T.broadcast(T.reinterpret(a, dtype="int32"), 16), dtype="uint8x64"),
                                       T.reinterpret(w, dtype="int8x64"), dtype="int32x16")

    def field(packed, m):
        shifted = packed if m == 0 else T.shift_right(packed, T.broadcast(T.uint8(m * bits), 64))
        return T.bitwise_and(shifted, T.broadcast(T.uint8(mask), 64))

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (group,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (16, 4), "uint8", offset_factor=1)
        C = T.match_buffer(c, (16,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:16], A[0:group], B[0:16, 0:4])
            T.writes(C[0:16])
            C[T.ramp(T.int32(0), 1, 16)] = _fold(lambda acc, m: dot(acc, A.vload([4 * m], "uint8x4"),
                                                                     field(B.vload([0, 0], dtype="uint8x64"), m)),
                                                 C.vload([0], dtype="int32x16"), fields)

    return impl


def _fold(step, acc, count: int):
    for m in range(count):
        acc = step(acc, m)
    return acc


def _pmaddwd_impl(lanes: int, llvm_name: str):
    acc, half = f"int32x{lanes}", f"int16x{2 * lanes}"

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (lanes, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:2], B[0:lanes, 0:2])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], dtype=acc) + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                T.reinterpret(T.broadcast(T.reinterpret(T.Cast("int16x2", A.vload([0], "uint8x2")), dtype="int32"),
                                          lanes), dtype=half),
                B.vload([0, 0], dtype=half), dtype=acc)

    return impl


VNNI = register_isa(DotISA("vnni", 16, 4, "uint8", "int8", "squeeze_dot_16x4_vnni", registers=32, vector_bytes=64,
                            features=("avx512vnni", "avx512bw"), instruction="vpdpbusd",
                            lanewise="squeeze_lanewise_16x4_vnni"))
AVX512 = register_isa(DotISA("avx512", 16, 2, "uint8", "int16", "squeeze_dot_16x2_avx512", registers=32,
                              vector_bytes=64, features=("avx512bw",), instruction="vpmaddwd zmm"))
AVX2 = register_isa(DotISA("avx2", 8, 2, "uint8", "int16", "squeeze_dot_8x2_avx2", registers=16, vector_bytes=32,
                            features=("avx2",), instruction="vpmaddwd ymm"))
VNNI4, VNNI2 = (register_isa(DotISA(f"vnni_w{bits}", 16, 32 // bits, "uint8", "uint8", f"squeeze_dot_16x{32 // bits}_vnni_w{bits}",
                                     registers=32, vector_bytes=64, features=("avx512vnni", "avx512bw"),
                                     instruction=f"vpdpbusd (int{bits} weights)", weight_bits=bits)) for bits in (4, 2))
ISAS = (VNNI, AVX512, AVX2)  # best first
NATIVE = {VNNI: (VNNI4, VNNI2)}  # beside an ISA, those for narrower weights

define_intrin(VNNI.intrin, lambda: (dot_desc(16, 4, "uint8", "int8"), _vnni_impl()))
define_intrin(VNNI.lanewise, lambda: (lanewise_desc(16, "int8"), _vnni_impl(lanewise=True)))
for _isa in (VNNI4, VNNI2):
    define_intrin(_isa.intrin, lambda bits=_isa.weight_bits: (packed_desc(16, 32 // bits, "uint8", bits),
                                                             _vnni_packed_impl(bits)))
define_intrin(AVX512.intrin, lambda: (dot_desc(16, 2, "uint8", "int16"), _pmaddwd_impl(16, "llvm.x86.avx512.pmaddw.d.512")))
define_intrin(AVX2.intrin, lambda: (dot_desc(8, 2, "uint8", "int16"), _pmaddwd_impl(8, "llvm.x86.avx2.pmadd.wd")))

@cache
def fix_stock_vnni() -> None:
    """Make TVM's own ``dot_16x4_vnni`` (used by MetaSchedule's x86 VNNI rules) compile on LLVM 22."""
    import tvm.s_tir.tensor_intrin.x86 as stock

    TensorIntrin.register(stock.VNNI_DOT_16x4_INTRIN, dot_desc(16, 4, "uint8", "int8"), _vnni_impl(), override=True)
