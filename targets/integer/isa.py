"""Integer dot-product ISA descriptions: what the shared kernels need to know about an instruction.

A target registers one :class:`DotISA` per instruction it tensorizes with (x86 ``vpdpbusd``,
ARM ``sdot``, ...) and declares a TensorIntrin named ``intrin`` whose description is
:func:`dot_desc` (:func:`define_intrin`: built when a schedule first uses it).
The kernels, packing, register tiling and tuning space of :mod:`targets.integer` are written
against these fields only; an ISA name that is not registered is an error, never a fallback.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from compiler.errors import SqueezeError

SIGNED_SHIFT = 128  # int8 <-> uint8: x + 128 maps [-128, 127] onto [0, 255]


@dataclass(frozen=True)
class DotISA:
    """One integer dot-product instruction as the kernels use it: ``C[L] += A[G] · B[L, G]``,
    or, for a matrix instruction of ``rows`` > 1 (``smmla``), ``C[R, L] += A[R, G] · B[L, G]^T``.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``vnni``; recorded on the kernels' blocks.
    lanes : int
        int32 accumulator lanes per instruction (output channels per vector).
    group : int
        Reduction elements summed per lane and instruction (input channels per step).
    act_dtype : str
        Activation dtype the instruction takes (``uint8`` for ``vpdpbusd`` and ``udot``, ``int8``
        for ``sdot``); activations of the other signedness are shifted by 128 and the shift is
        corrected per output channel (unless the target has an ISA taking them, :func:`isa_for`).
    weight_dtype : str
        Dtype weights are packed in (``int16`` where int8 weights are widened at compile time;
        ``uint8`` for unsigned × unsigned instructions such as ``udot``: see ``weight_offset``).
    intrin : str
        Registered tensor-intrinsic name (description: :func:`dot_desc`).
    registers : int
        Architectural vector registers (accumulators plus operands must fit).
    vector_bytes : int
        Bytes of one accumulator vector (``4 * lanes * rows``) and of the SIMD registers.
    features : tuple of str
        LLVM CPU features a target needs for this instruction.
    instruction : str
        The instruction's name, for ``squeeze targets`` (e.g. ``vpdpbusd zmm``).
    rows : int
        Activation rows (matrix rows) one instruction takes: neighbouring output pixels of a
        conv, matrix rows of a matmul, stored by the kernels as contiguous ``[rows, group]``
        activation and ``[rows, lanes]`` accumulator blocks.
    weight_bits : int
        8, or 4 / 2 for weights stored ``8 / weight_bits`` per byte (int4, int2 layers): byte ``j``
        of a lane's ``group · weight_bits / 8`` holds weights ``j + m · group · weight_bits / 8``
        at bit ``m · weight_bits``, as ``w + 2^(weight_bits - 1)``; the intrinsic unpacks them in
        registers (:func:`packed_desc`).
    lanewise : str
        Registered tensor intrinsic of the same instruction without the broadcast, ``C[i] +=
        Σ_k byte_k(A[i]) · B[i, k]`` (description: :func:`lanewise_desc`), which the depthwise
        kernel of :mod:`.depthwise_dot` needs; empty where the ISA has none.
    """

    name: str
    lanes: int
    group: int
    act_dtype: str
    weight_dtype: str
    intrin: str
    registers: int
    vector_bytes: int
    features: tuple[str, ...] = ()
    instruction: str = ""
    rows: int = 1
    weight_bits: int = 8
    lanewise: str = ""

    @property
    def weight_offset(self) -> int:
        """What packing adds to the weights: 128 for a ``uint8`` weight operand (8 for int4), else 0.

        ``Σ x·w = Σ x·(w + 128) - 128 · Σ x`` over each output's window: the legalization
        subtracts ``weight_offset`` times the window sum of the activations (:mod:`.legalize`).
        """
        return 1 << (self.weight_bits - 1) if self.weight_dtype == "uint8" else 0

    @property
    def sub_byte(self) -> bool:
        """Whether weights are stored several per byte."""
        return self.weight_bits < 8

    @property
    def stored_group(self) -> int:
        """Stored weight elements per lane and group: ``group``, or its bytes when sub-byte."""
        return self.group * self.weight_bits // 8 if self.sub_byte else self.group

    @property
    def float_lanes(self) -> int:
        """float32 / int32 elements per vector register (``rows × lanes`` accumulators; the
        epilogue's and the depthwise kernel's vector)."""
        return self.vector_bytes // 4


_ISAS: dict[str, DotISA] = {}
_PENDING: dict[str, Callable[[], tuple]] = {}  # declared tensor intrinsics not yet built
_PENDING_LOCK = threading.Lock()


def define_intrin(name: str, make: Callable[[], tuple]) -> None:
    """Declare TensorIntrin ``name``: ``make()`` returns its (description, implementation) and runs
    on the first :func:`use_intrin` of ``name``. Parsing the TVMScript of an intrinsic takes
    about 0.2 s, which importing a target (every ``squeeze`` command) should not pay."""
    with _PENDING_LOCK:
        _PENDING[name] = make


def use_intrin(name: str) -> str:
    """``name``, registered with TVM first if it was only declared (:func:`define_intrin`)."""
    with _PENDING_LOCK:
        make = _PENDING.pop(name, None)
        if make is not None:
            TensorIntrin.register(name, *make(), override=True)
    return name


def register_isa(isa: DotISA) -> DotISA:
    """Register ``isa`` for the shared kernels (a name registered twice must describe the same ISA)."""
    if _ISAS.get(isa.name, isa) != isa:
        raise ValueError(f"integer ISA '{isa.name}' is registered twice with different descriptions")
    _ISAS[isa.name] = isa
    return isa


def get_isa(name: str) -> DotISA:
    """The registered ISA called ``name``; an unknown name is an error."""
    if name not in _ISAS:
        raise SqueezeError(f"unknown integer ISA '{name}': registered ones are {', '.join(sorted(_ISAS)) or 'none'}"
                           " (a target must register its DotISA before using the integer kernels)")
    return _ISAS[name]


def select_isa(features: Iterable[str], candidates: Iterable[DotISA]) -> DotISA | None:
    """The first of ``candidates`` (best first) whose required features are all in ``features``."""
    feats = set(features)
    return next((isa for isa in candidates if set(isa.features) <= feats), None)


def isa_for(act_dtype: str, isa: DotISA, native: Iterable[DotISA] = (), weight_bits: int = 8) -> DotISA:
    """The ISA an integer layer with ``act_dtype`` activations (and weights of ``weight_bits``
    two's-complement bits) runs on: of the ISAs taking ``act_dtype``, the one storing the
    fewest weight bits that still hold the weights (int4 ISAs for 4-bit weights).

    Parameters
    ----------
    act_dtype : str
        The layer's activation dtype (``int8`` or ``uint8``).
    isa : DotISA
        The target's default ISA: activations of another dtype are shifted by 128 into its
        ``act_dtype``.
    native : iterable of DotISA
        ISAs the target declares for activations of their own ``act_dtype`` (e.g. ``udot`` for
        ``uint8`` beside an ``sdot`` default), or for narrower weights (``weight_bits`` 4).
    weight_bits : int
        Bits the layer's weights need (:func:`weight_bits_of`).

    Returns
    -------
    DotISA
        The first of ``isa`` and ``native`` whose ``act_dtype`` is ``act_dtype``, else ``isa``.
    """
    fitting = [n for n in (isa, *native) if n.act_dtype == act_dtype and n.weight_bits >= weight_bits]
    return min(fitting, key=lambda n: n.weight_bits) if fitting else isa


def dot_desc(lanes: int, group: int, act_dtype: str, weight_dtype: str, rows: int = 1):
    """TensorIntrin description shared by every ISA: ``C[i] += A[k] * B[i, k]`` in int32, or
    ``C[r, i] += A[r, k] * B[i, k]`` when ``rows`` > 1, ``A`` and ``C`` each one contiguous block
    (the kernels store a matrix ISA's activations and accumulators so)."""
    if rows > 1:
        return _matrix_desc(rows, lanes, group, act_dtype, weight_dtype)

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (group,), act_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, group), weight_dtype, offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:group], B[0:lanes, 0:group])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, group):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _matrix_desc(rows: int, lanes: int, group: int, act_dtype: str, weight_dtype: str):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (rows, group), act_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, group), weight_dtype, offset_factor=1)
        C = T.match_buffer(c, (rows, lanes), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:rows, 0:lanes], A[0:rows, 0:group], B[0:lanes, 0:group])
            T.writes(C[0:rows, 0:lanes])
            for r, i, k in T.grid(rows, lanes, group):
                with T.sblock("update"):
                    vr, vi, vk = T.axis.remap("SSR", [r, i, k])
                    C[vr, vi] = C[vr, vi] + T.cast(A[vr, vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def word_byte(word: T.PrimExpr, k: T.PrimExpr) -> T.PrimExpr:
    """Byte ``k`` (0 = least significant) of uint32 ``word``, as int32."""
    return T.Cast("int32", T.bitwise_and(T.shift_right(word, T.Cast("uint32", k * 8)), T.uint32(255)))


def lanewise_desc(lanes: int, weight_dtype: str):
    """TensorIntrin description of a lane-wise dot product: ``C[i] += Σ_k byte_k(A[i]) · B[i, k]``
    over the 4 unsigned bytes of each uint32 word ``A[i]`` (:func:`word_byte`)."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (lanes,), "uint32", offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), weight_dtype, offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:lanes], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + word_byte(A[vi], vk) * T.Cast("int32", B[vi, vk])

    return desc


def packed_weight(packed: T.PrimExpr, k: T.PrimExpr, group: int, bits: int) -> T.PrimExpr:
    """The ``k``-th (``k < group``) unsigned ``bits``-bit weight of a lane's packed bytes
    (``packed`` = byte ``k % (group · bits / 8)``), as int32: bit field ``k // (group · bits / 8)``."""
    stride = group * bits // 8
    shift = T.Cast("uint8", k // stride * bits)
    return T.Cast("int32", T.bitwise_and(T.shift_right(packed, shift), T.uint8((1 << bits) - 1)))


def packed_desc(lanes: int, group: int, act_dtype: str, bits: int):
    """TensorIntrin description of sub-byte weights: ``C[i] += A[k] * w(B[i, k % s], k)``
    (:func:`packed_weight`), ``B`` the ``[lanes, s]`` packed bytes, ``s = group · bits / 8``."""
    stride = group * bits // 8

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (group,), act_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, stride), "uint8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:group], B[0:lanes, 0:stride])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, group):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * packed_weight(B[vi, vk % stride], vk, group, bits)

    return desc


def weight_bits_of(weight) -> int:
    """Two's-complement bits holding every value of integer ``weight`` (at least 2)."""
    lo, hi = int(weight.min()), int(weight.max())
    return max(2, max(int(-lo - 1).bit_length(), int(hi).bit_length()) + 1)
