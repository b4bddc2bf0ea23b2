"""Integer dot-product ISA descriptions: what the shared kernels need to know about an instruction.

A target registers one :class:`DotISA` per instruction it tensorizes with (x86 ``vpdpbusd``,
ARM ``sdot``, ...) and a TensorIntrin named ``intrin`` whose description is :func:`dot_desc`.
The kernels, packing, register tiling and tuning space of :mod:`targets.integer` are written
against these fields only; an ISA name that is not registered is an error, never a fallback.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from tvm.script import tirx as T

from compiler.errors import SqueezeError


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
        Activation dtype the instruction takes (``uint8`` for ``vpdpbusd``, ``int8`` for ``sdot``);
        activations of the other signedness are shifted by 128 and the shift is corrected
        per output channel.
    weight_dtype : str
        Dtype weights are packed in (``int16`` where int8 weights are widened at compile time).
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

    @property
    def shifts_signed(self) -> bool:
        """Whether signed (int8) activations are shifted into the unsigned range the instruction takes."""
        return self.act_dtype == "uint8"

    @property
    def float_lanes(self) -> int:
        """float32 / int32 elements per vector register (``rows × lanes`` accumulators; the
        epilogue's and the depthwise kernel's vector)."""
        return self.vector_bytes // 4


_ISAS: dict[str, DotISA] = {}


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
