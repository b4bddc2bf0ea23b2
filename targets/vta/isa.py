"""The VTA instruction set, bit for bit as the published hardware decodes it.

Layouts follow apache/tvm-vta ``include/vta/hw_spec.h``: C bit-fields of ``uint64_t`` laid out
LSB first, a field that does not fit in what is left of a 64-bit word starting the next one
(what GCC does for the HLS sources and the runtime), so an instruction is two little-endian
64-bit words. The widths of the index fields come from the buffer depths of the
:class:`~.config.VTAConfig`. Micro-ops are 32-bit words (``dst``, ``src``, ``wgt`` indices).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from .config import VTAConfig

# opcodes (hw_spec_const.h)
LOAD, STORE, GEMM, FINISH, ALU = 0, 1, 2, 3, 4
OPCODE_NAMES = {LOAD: "LOAD", STORE: "STORE", GEMM: "GEMM", FINISH: "FINISH", ALU: "ALU"}
# ALU opcodes
ALU_MIN, ALU_MAX, ALU_ADD, ALU_SHR, ALU_MUL = 0, 1, 2, 3, 4
ALU_NAMES = {ALU_MIN: "MIN", ALU_MAX: "MAX", ALU_ADD: "ADD", ALU_SHR: "SHR", ALU_MUL: "MUL"}
# memory ids
MEM_UOP, MEM_WGT, MEM_INP, MEM_ACC, MEM_OUT = 0, 1, 2, 3, 4
MEM_NAMES = {MEM_UOP: "UOP", MEM_WGT: "WGT", MEM_INP: "INP", MEM_ACC: "ACC", MEM_OUT: "OUT"}

INSN_BYTES = 16
UOP_BYTES = 4
LOOP_ITER_WIDTH = 14
IMM_WIDTH = 16
PAD_WIDTH = 4

_HEADER = (("opcode", 3), ("pop_prev", 1), ("pop_next", 1), ("push_prev", 1), ("push_next", 1))


@dataclass(frozen=True)
class Field:
    name: str
    pos: int  # bit position in the 128-bit instruction (LSB of word 0 is bit 0)
    width: int
    signed: bool = False


def _layout(spec: tuple[tuple[str, int], ...], word_bits: int = 64, signed: tuple[str, ...] = (),
            limit: int = 8 * INSN_BYTES) -> tuple[Field, ...]:
    """Positions of C bit-fields declared in order on ``word_bits``-bit storage units (``limit`` bits)."""
    out, pos = [], 0
    for name, width in spec:
        if pos // word_bits != (pos + width - 1) // word_bits:  # does not fit: next storage unit
            pos = (pos // word_bits + 1) * word_bits
        out.append(Field(name, pos, width, name in signed))
        pos += width
    if pos > limit:
        raise ValueError(f"the fields take {pos} bits, more than {limit}: check VTAConfig.validate()")
    return tuple(out)


@lru_cache(maxsize=None)
def layouts(cfg: VTAConfig) -> dict[str, tuple[Field, ...]]:
    """Field layouts of every instruction kind (``mem``, ``gemm``, ``alu``, ``finish``) and of the
    micro-op (``uop``, 32 bits) for ``cfg``."""
    lu, la, li, lw = cfg.log_uop_depth, cfg.log_acc_depth, cfg.log_inp_depth, cfg.log_wgt_depth
    loop = (("reset", 1), ("uop_bgn", lu), ("uop_end", lu + 1), ("iter_out", LOOP_ITER_WIDTH),
            ("iter_in", LOOP_ITER_WIDTH))
    return {
        "mem": _layout(_HEADER + (("memory_type", 3), ("sram_base", 16), ("dram_base", 32), ("y_size", 16),
                                  ("x_size", 16), ("x_stride", 16), ("y_pad_0", PAD_WIDTH), ("y_pad_1", PAD_WIDTH),
                                  ("x_pad_0", PAD_WIDTH), ("x_pad_1", PAD_WIDTH))),
        "gemm": _layout(_HEADER + loop + (("dst_factor_out", la), ("dst_factor_in", la), ("src_factor_out", li),
                                          ("src_factor_in", li), ("wgt_factor_out", lw), ("wgt_factor_in", lw))),
        "alu": _layout(_HEADER + loop + (("dst_factor_out", la), ("dst_factor_in", la), ("src_factor_out", la),
                                         ("src_factor_in", la), ("alu_opcode", 3), ("use_imm", 1),
                                         ("imm", IMM_WIDTH)), signed=("imm",)),
        "finish": _layout(_HEADER),
        "uop": _layout((("dst_idx", la), ("src_idx", max(la, li)), ("wgt_idx", lw)), word_bits=32, limit=32),
    }


@dataclass(frozen=True)
class Deps:
    """Dependency flags: pop a token from / push one to the previous or next pipeline stage."""

    pop_prev: int = 0
    pop_next: int = 0
    push_prev: int = 0
    push_next: int = 0


@dataclass(frozen=True)
class Mem(Deps):
    """LOAD or STORE of a 2-D strided block, with padding (loads only) around it."""

    opcode: int = LOAD
    memory_type: int = MEM_INP
    sram_base: int = 0
    dram_base: int = 0
    y_size: int = 0
    x_size: int = 0
    x_stride: int = 0
    y_pad_0: int = 0
    y_pad_1: int = 0
    x_pad_0: int = 0
    x_pad_1: int = 0


@dataclass(frozen=True)
class Gemm(Deps):
    """GEMM (or accumulator reset) over micro-ops ``[uop_bgn, uop_end)`` in a two-level loop."""

    opcode: int = GEMM
    reset: int = 0
    uop_bgn: int = 0
    uop_end: int = 0
    iter_out: int = 1
    iter_in: int = 1
    dst_factor_out: int = 0
    dst_factor_in: int = 0
    src_factor_out: int = 0
    src_factor_in: int = 0
    wgt_factor_out: int = 0
    wgt_factor_in: int = 0


@dataclass(frozen=True)
class Alu(Deps):
    """Vector ALU op on accumulators: ``acc[dst] = op(acc[dst], imm or acc[src])``."""

    opcode: int = ALU
    reset: int = 0
    uop_bgn: int = 0
    uop_end: int = 0
    iter_out: int = 1
    iter_in: int = 1
    dst_factor_out: int = 0
    dst_factor_in: int = 0
    src_factor_out: int = 0
    src_factor_in: int = 0
    alu_opcode: int = ALU_ADD
    use_imm: int = 0
    imm: int = 0


@dataclass(frozen=True)
class Finish(Deps):
    opcode: int = FINISH


Insn = Mem | Gemm | Alu | Finish
_KIND = {LOAD: ("mem", Mem), STORE: ("mem", Mem), GEMM: ("gemm", Gemm), ALU: ("alu", Alu), FINISH: ("finish", Finish)}


def _put(value: int, f: Field, what: str) -> int:
    lo, hi = (-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1) if f.signed else (0, (1 << f.width) - 1)
    if not lo <= value <= hi:
        raise ValueError(f"{what}: field {f.name} = {value} does not fit in {f.width} bits")
    return (value & ((1 << f.width) - 1)) << f.pos


def encode(insn: Insn, cfg: VTAConfig) -> bytes:
    """The 16 bytes of one instruction."""
    kind, _ = _KIND[insn.opcode]
    word = 0
    for f in layouts(cfg)[kind]:
        word |= _put(int(getattr(insn, f.name)), f, OPCODE_NAMES[insn.opcode])
    return word.to_bytes(INSN_BYTES, "little")


def _get(word: int, f: Field) -> int:
    value = (word >> f.pos) & ((1 << f.width) - 1)
    return value - (1 << f.width) if f.signed and value >> (f.width - 1) else value


def decode(data: bytes, cfg: VTAConfig) -> Insn:
    """The instruction in 16 bytes; unknown opcodes raise ``ValueError``."""
    word = int.from_bytes(bytes(data[:INSN_BYTES]), "little")
    opcode = word & 7
    if opcode not in _KIND:
        raise ValueError(f"unknown opcode {opcode}")
    kind, cls = _KIND[opcode]
    names = {f.name for f in fields(cls)}
    return cls(**{f.name: _get(word, f) for f in layouts(cfg)[kind] if f.name in names})


def encode_stream(insns: list[Insn], cfg: VTAConfig) -> np.ndarray:
    """Instructions as a ``uint8`` array of ``16 · len(insns)`` bytes (what the fetch unit reads)."""
    return np.frombuffer(b"".join(encode(i, cfg) for i in insns), np.uint8).copy()


def decode_stream(data: np.ndarray, cfg: VTAConfig) -> list[Insn]:
    raw = np.asarray(data, np.uint8).tobytes()
    return [decode(raw[i:i + INSN_BYTES], cfg) for i in range(0, len(raw), INSN_BYTES)]


def encode_uops(dst: np.ndarray, src: np.ndarray, wgt: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """Micro-ops as ``uint32`` words (vectorized; indices checked against their widths)."""
    out = np.zeros(np.shape(dst), np.uint64)
    for f, values in zip(layouts(cfg)["uop"], (dst, src, wgt)):
        values = np.asarray(values, np.int64)
        if values.size and (values.min() < 0 or values.max() >= 1 << f.width):
            raise ValueError(f"micro-op field {f.name} out of its {f.width} bits")
        out |= values.astype(np.uint64) << np.uint64(f.pos)
    return out.astype(np.uint32)


def decode_uops(words: np.ndarray, cfg: VTAConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    words = np.asarray(words, np.uint32).astype(np.uint64)
    return tuple(((words >> np.uint64(f.pos)) & np.uint64((1 << f.width) - 1)).astype(np.int64)
                 for f in layouts(cfg)["uop"])


def describe(insn: Insn) -> str:
    """One line per instruction (``squeeze inspect``-style listings, error messages)."""
    flags = "".join(c for c, v in zip("PpUu", (insn.pop_prev, insn.pop_next, insn.push_prev, insn.push_next)) if v)
    name = OPCODE_NAMES[insn.opcode]
    if isinstance(insn, Mem):
        return (f"{name} {MEM_NAMES.get(insn.memory_type, insn.memory_type)} sram={insn.sram_base} "
                f"dram={insn.dram_base} {insn.y_size}x{insn.x_size}/{insn.x_stride} "
                f"pad={insn.y_pad_0},{insn.y_pad_1},{insn.x_pad_0},{insn.x_pad_1} [{flags}]")
    if isinstance(insn, (Gemm, Alu)):
        op = f" {ALU_NAMES.get(insn.alu_opcode)}{' imm=%d' % insn.imm if insn.use_imm else ''}" \
            if isinstance(insn, Alu) else (" reset" if insn.reset else "")
        return f"{name}{op} uop[{insn.uop_bgn}:{insn.uop_end}] {insn.iter_out}x{insn.iter_in} [{flags}]"
    return f"{name} [{flags}]"
