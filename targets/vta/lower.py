"""Lowering of one integer layer (conv2d or dense + its shift-only epilogue) to a VTA program.

Data are packed as VTA's GEMM core reads them: activations ``NCHW{b}n{B}c`` (one input element
is ``b × B`` int8: batch × channel block), weights ``OIHW{B}o{B}i`` (one element is a ``B × B``
block), both padded with zeros to whole blocks. A layer is tiled into output tiles (``oc_t``
channel blocks × ``rows`` output rows × the full width), each accumulated over input-channel
chunks (``ic_t`` blocks):

* load stage: per chunk, one 2-D DMA per input-channel block (the tile's rows, with the
  convolution's zero padding inserted on the fly: ``y_pad``/``x_pad``), one 2-D DMA of the
  chunk's weights;
* compute stage: an accumulator reset per tile, one GEMM per chunk (micro-ops over ``oc × row
  × kh × kw``, loops over the chunk's channel blocks and the output columns), then the epilogue
  as ALU ops over the tile (bias / rounding ADD, per-channel SHR, MAX / MIN for ReLU and clip,
  per-channel vectors loaded once into the accumulator buffer, scalars as immediates);
* store stage: one 2-D DMA of the tile (the accumulators truncated to int8).

Input/weight buffers and the accumulator buffer are split in halves used alternately (two
virtual threads), so the next chunk loads while this one computes and a tile stores while the
next accumulates; dependency tokens order them (RAW: load→compute→store, WAR: compute→load,
store→compute), and the stream ends with every token consumed. The tiling is chosen by a
cost model among those that fit the buffers; a layer with no fitting tiling is
:class:`Unfit` with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import product

import numpy as np

from ..integer.kernels import ConvShape
from . import isa
from .config import Board, VTAConfig
from .isa import Alu, Finish, Gemm, Mem

MAX_PAD = (1 << isa.PAD_WIDTH) - 1
IMM_MIN, IMM_MAX = -(1 << (isa.IMM_WIDTH - 1)), (1 << (isa.IMM_WIDTH - 1)) - 1
ALU_OPS = {"add": isa.ALU_ADD, "shr": isa.ALU_SHR, "max": isa.ALU_MAX, "min": isa.ALU_MIN}


class Unfit(Exception):
    """The layer cannot run on this VTA configuration (the message says why)."""


@dataclass(frozen=True)
class Step:
    """One epilogue op on the int32 accumulators: ``add`` / ``shr`` (negative: shift left) /
    ``max`` / ``min`` with a scalar or a per-output-channel vector."""

    op: str
    value: object  # int or np.ndarray [out_channels]

    @property
    def vector(self) -> bool:
        return isinstance(self.value, np.ndarray)


@dataclass(frozen=True)
class Tiling:
    oc_t: int  # output-channel blocks per tile
    ic_t: int  # input-channel blocks per chunk
    rows: int  # output rows per tile
    estimate: int  # cycles (the planner's model)


@dataclass
class VTAProgram:
    """A lowered layer: the instruction stream, the DRAM image (constants in place) and where
    the input and output go in it."""

    cfg: VTAConfig
    shape: ConvShape
    stream: np.ndarray  # uint8, 16 bytes per instruction
    dram: np.ndarray  # uint8: uops, weights, epilogue vectors; input and output regions zeroed
    inp_offset: int
    out_offset: int
    tiling: Tiling
    macs: int  # useful multiply-accumulates (unpadded)
    counts: dict = field(default_factory=dict)  # instructions per opcode name
    header: np.ndarray | None = None  # what the runtime reads besides stream and image (runtime.header)

    def pack_input(self, x: np.ndarray) -> np.ndarray:
        """``x`` NCHW int8 as the DRAM input region (``[N/b, C/B, H, W, b, B]``)."""
        return pack_activations(x, self.cfg)

    def unpack_output(self, packed: np.ndarray) -> np.ndarray:
        s = self.shape
        return unpack_activations(packed, self.cfg, s.batch, s.out_channels, s.out_height, s.out_width)

    def image(self, x: np.ndarray) -> np.ndarray:
        """A DRAM image with input ``x`` (NCHW int8) in place."""
        dram = self.dram.copy()
        packed = self.pack_input(x)
        dram[self.inp_offset:self.inp_offset + packed.size] = packed
        return dram

    def output(self, dram: np.ndarray) -> np.ndarray:
        s, c = self.shape, self.cfg
        size = _ceil(s.batch, c.batch) * _ceil(s.out_channels, c.block) * s.out_height * s.out_width * c.out_elem_bytes
        return self.unpack_output(dram[self.out_offset:self.out_offset + size])


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def pack_activations(x: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """NCHW int8 → ``[N/b, C/B, H, W, b, B]`` bytes, zero-padded to whole blocks."""
    n, ch, h, w = x.shape
    nb, cb = _ceil(n, cfg.batch), _ceil(ch, cfg.block)
    padded = np.zeros((nb * cfg.batch, cb * cfg.block, h, w), np.int8)
    padded[:n, :ch] = x
    packed = padded.reshape(nb, cfg.batch, cb, cfg.block, h, w).transpose(0, 2, 4, 5, 1, 3)
    return np.ascontiguousarray(packed).view(np.uint8).reshape(-1)


def unpack_activations(packed: np.ndarray, cfg: VTAConfig, n: int, c: int, h: int, w: int) -> np.ndarray:
    """``[N/b, C/B, H, W, b, B]`` int8 bytes → NCHW (the padding dropped)."""
    nb, cb = _ceil(n, cfg.batch), _ceil(c, cfg.block)
    y = packed.view(np.int8)[:nb * cb * h * w * cfg.batch * cfg.block]
    y = y.reshape(nb, cb, h, w, cfg.batch, cfg.block).transpose(0, 4, 1, 5, 2, 3)
    return y.reshape(nb * cfg.batch, cb * cfg.block, h, w)[:n, :c]


def pack_weights(weight: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """OIHW int8 → ``[O/B, I/B, KH, KW, B(o), B(i)]`` bytes, zero-padded."""
    o, i, kh, kw = weight.shape
    ob, ib = _ceil(o, cfg.block), _ceil(i, cfg.block)
    padded = np.zeros((ob * cfg.block, ib * cfg.block, kh, kw), np.int8)
    padded[:o, :i] = weight
    packed = padded.reshape(ob, cfg.block, ib, cfg.block, kh, kw).transpose(0, 2, 4, 5, 1, 3)
    return np.ascontiguousarray(packed).view(np.uint8).reshape(-1)


def supported(shape: ConvShape) -> str:
    """Why the layer's geometry cannot run on VTA ('' if it can)."""
    if shape.groups != 1:
        return "grouped/depthwise convolution (VTA's GEMM core reduces over whole channel blocks)"
    if max(shape.padding) > MAX_PAD:
        return f"padding {max(shape.padding)} exceeds the {MAX_PAD} a LOAD inserts"
    return ""


@dataclass(frozen=True)
class _Geometry:
    """Derived sizes of a layer on ``cfg``."""

    s: ConvShape
    cfg: VTAConfig

    @property
    def nb(self): return _ceil(self.s.batch, self.cfg.batch)

    @property
    def icb(self): return _ceil(self.s.in_channels, self.cfg.block)

    @property
    def ocb(self): return _ceil(self.s.out_channels, self.cfg.block)

    @property
    def kk(self): return self.s.kernel_h * self.s.kernel_w

    @property
    def wp(self): return self.s.width + self.s.padding[1] + self.s.padding[3]

    def in_rows(self, rows: int) -> int:
        return (rows - 1) * self.s.strides[0] + (self.s.kernel_h - 1) * self.s.dilation[0] + 1


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def plan(shape: ConvShape, cfg: VTAConfig, n_vectors: int, board: Board) -> Tiling:
    """The tiling with the lowest estimated cycles among those fitting every buffer half."""
    g = _Geometry(shape, cfg)
    oh, ow = shape.out_height, shape.out_width
    acc_half = (cfg.acc_depth - n_vectors * g.ocb) // 2
    inp_half, wgt_half = cfg.inp_depth // 2, cfg.wgt_depth // 2
    bus = board.bus_bytes
    best = None
    why = "no tiling fits"
    for oc_t, ic_t in product(_divisors(g.ocb), _divisors(g.icb)):
        if oc_t * ic_t * g.kk > wgt_half:
            why = f"the weights of one channel block pair ({g.kk} elements) exceed half the weight buffer"
            continue
        for rows in range(min(oh, 64), 0, -1):
            if oc_t * rows * ow > acc_half:
                why = (f"one output row of a channel block ({ow} elements) exceeds half the accumulator buffer "
                       f"({acc_half})")
                continue
            if ic_t * g.in_rows(rows) * g.wp > inp_half:
                why = f"the input rows of one output row ({g.in_rows(1) * g.wp} elements) exceed half the input buffer"
                continue
            variants = 1 + (oh % rows != 0)
            uops = 4 * variants * oc_t * rows * g.kk + 8 * variants * g.ocb
            if uops > cfg.uop_depth or ow > (1 << isa.LOOP_ITER_WIDTH) - 1:
                why = "the micro-ops exceed the micro-op buffer"
                continue
            steps = g.nb * (g.ocb // oc_t) * _ceil(oh, rows) * (g.icb // ic_t)
            compute = oc_t * rows * ow * g.kk * ic_t + 4
            load = (ic_t * g.in_rows(rows) * shape.width * cfg.inp_elem_bytes
                    + oc_t * ic_t * g.kk * cfg.wgt_elem_bytes) / bus + 32 * (ic_t + 1)
            cost = int(steps * max(compute, load))
            if best is None or cost < best.estimate:
                best = Tiling(oc_t, ic_t, rows, cost)
            break  # fewer rows only cost more
    if best is None:
        raise Unfit(why)
    return best


class _Emitter:
    """Builds the micro-op table and the three-stage instruction stream with its tokens."""

    def __init__(self, cfg: VTAConfig):
        self.cfg = cfg
        self.uops: dict[tuple, tuple[int, int]] = {}  # key -> (begin, end)
        self.uop_words: list[tuple[int, int, int]] = []
        self.insns: list = []

    def uop_range(self, key: tuple, entries) -> tuple[int, int]:
        if key not in self.uops:
            begin = len(self.uop_words)
            self.uop_words.extend(entries())
            self.uops[key] = (begin, len(self.uop_words))
        return self.uops[key]

    def emit(self, insn) -> None:
        self.insns.append(insn)


def _align(n: int, a: int) -> int:
    return _ceil(n, a) * a


def lower_conv(shape: ConvShape, weight: np.ndarray, steps: list[Step], cfg: VTAConfig, board: Board) -> VTAProgram:
    """Lower a conv2d (NCHW int8 data, OIHW int8 ``weight``, no padding value other than 0)
    followed by the epilogue ``steps`` into a :class:`VTAProgram`; raises :class:`Unfit`."""
    reason = supported(shape)
    if reason:
        raise Unfit(reason)
    g = _Geometry(shape, cfg)
    vectors = [s for s in steps if s.vector]
    t = plan(shape, cfg, len(vectors), board)
    oh, ow = shape.out_height, shape.out_width
    sh, sw = shape.strides
    dh, dw = shape.dilation
    pt, pl, _, pr = shape.padding
    kh_, kw_ = shape.kernel_h, shape.kernel_w
    n_vec = len(vectors) * g.ocb
    acc_half = (cfg.acc_depth - n_vec) // 2
    acc_base = [n_vec, n_vec + acc_half]
    inp_base = [0, cfg.inp_depth // 2]
    wgt_base = [0, cfg.wgt_depth // 2]

    # --- DRAM image: uops | weights | vectors | input | output (each aligned to its element) ----
    align = max(cfg.wgt_elem_bytes, cfg.acc_elem_bytes, 64)
    wgt_bytes = pack_weights(weight, cfg)
    vec_bytes = np.zeros((max(n_vec, 1), cfg.batch, cfg.block), np.int32)
    for j, s in enumerate(vectors):
        padded = np.zeros(g.ocb * cfg.block, np.int64)
        padded[:shape.out_channels] = s.value
        vec_bytes[j * g.ocb:(j + 1) * g.ocb] = padded.reshape(g.ocb, 1, cfg.block).astype(np.int32)
    inp_size = g.nb * g.icb * shape.height * shape.width * cfg.inp_elem_bytes
    out_size = g.nb * g.ocb * oh * ow * cfg.out_elem_bytes

    e = _Emitter(cfg)
    tiles = [(n, oc0, oh0) for n in range(g.nb) for oc0 in range(0, g.ocb, t.oc_t) for oh0 in range(0, oh, t.rows)]
    chunks = list(range(0, g.icb, t.ic_t))
    # micro-ops (built first: the uop region's size fixes the other offsets)
    def gemm_uops(a: int, b: int, rows: int):
        return [(acc_base[a] + oc * rows * ow + r * ow,
                 inp_base[b] + (r * sh + kh * dh) * g.wp + kw * dw,
                 wgt_base[b] + oc * t.ic_t * g.kk + kh * kw_ + kw)
                for oc in range(t.oc_t) for r in range(rows) for kh in range(kh_) for kw in range(kw_)]

    plans = []
    step = 0
    for ti, (n, oc0, oh0) in enumerate(tiles):
        rows = min(t.rows, oh - oh0)
        a = ti % 2
        for ci, ic0 in enumerate(chunks):
            b = step % 2
            gemm = e.uop_range(("gemm", a, b, rows), lambda a=a, b=b, rows=rows: gemm_uops(a, b, rows))
            plans.append((ti, n, oc0, oh0, rows, a, ci, ic0, b, gemm))
            step += 1
    for a, rows in {(ti % 2, min(t.rows, oh - oh0)) for ti, (_, _, oh0) in enumerate(tiles)}:
        e.uop_range(("tile", a), lambda a=a: [(acc_base[a], 0, 0)])
        for oc0 in range(0, g.ocb, t.oc_t):
            for j in range(len(vectors)):
                e.uop_range(("vec", a, j, oc0), lambda a=a, j=j, oc0=oc0: [(acc_base[a], j * g.ocb + oc0, 0)])
    n_uops = len(e.uop_words)
    if n_uops > cfg.uop_depth:
        raise Unfit(f"{n_uops} micro-ops exceed the micro-op buffer ({cfg.uop_depth})")

    uop_off = 0
    wgt_off = _align(uop_off + 4 * n_uops, align)
    vec_off = _align(wgt_off + wgt_bytes.size, align)
    inp_off = _align(vec_off + vec_bytes.nbytes, align)
    out_off = _align(inp_off + inp_size, align)
    total = _align(out_off + out_size, align)
    if total >= (1 << 32):
        raise Unfit("the layer's DRAM image exceeds the 32-bit address space")
    dram = np.zeros(total, np.uint8)
    uw = np.array(e.uop_words, np.int64).reshape(-1, 3)
    dram[uop_off:uop_off + 4 * n_uops] = isa.encode_uops(uw[:, 0], uw[:, 1], uw[:, 2], cfg).view(np.uint8)
    dram[wgt_off:wgt_off + wgt_bytes.size] = wgt_bytes
    dram[vec_off:vec_off + vec_bytes.nbytes] = vec_bytes.view(np.uint8).reshape(-1)

    # --- the stream ------------------------------------------------------------------------
    emit = e.emit
    emit(Mem(opcode=isa.LOAD, memory_type=isa.MEM_UOP, sram_base=0, dram_base=uop_off // 4, y_size=1,
             x_size=n_uops, x_stride=n_uops))
    if n_vec:
        emit(Mem(opcode=isa.LOAD, memory_type=isa.MEM_ACC, sram_base=0, dram_base=vec_off // cfg.acc_elem_bytes,
                 y_size=1, x_size=n_vec, x_stride=n_vec))
    n_steps = len(plans)
    for ti, n, oc0, oh0, rows, a, ci, ic0, b, (ub, ue) in plans:
        g_step = ti * len(chunks) + ci
        # load stage: input rows of each channel block of the chunk (padding on the fly), weights
        iy0 = oh0 * sh - pt
        ih = g.in_rows(rows)
        y0, y1 = max(iy0, 0), min(iy0 + ih, shape.height)
        loads = []
        for c in range(t.ic_t):
            loads.append(dict(memory_type=isa.MEM_INP, sram_base=inp_base[b] + c * ih * g.wp,
                              dram_base=inp_off // cfg.inp_elem_bytes
                              + ((n * g.icb + ic0 + c) * shape.height + y0) * shape.width,
                              y_size=y1 - y0, x_size=shape.width, x_stride=shape.width,
                              y_pad_0=y0 - iy0, y_pad_1=iy0 + ih - y1, x_pad_0=pl, x_pad_1=g.wp - pl - shape.width))
        loads.append(dict(memory_type=isa.MEM_WGT, sram_base=wgt_base[b],
                          dram_base=wgt_off // cfg.wgt_elem_bytes + (oc0 * g.icb + ic0) * g.kk,
                          y_size=t.oc_t, x_size=t.ic_t * g.kk, x_stride=g.icb * g.kk))
        if any(d.get("y_pad_0", 0) > MAX_PAD or d.get("y_pad_1", 0) > MAX_PAD or d.get("x_pad_1", 0) > MAX_PAD
               for d in loads):
            raise Unfit(f"padding exceeds the {MAX_PAD} a LOAD inserts")
        for k, d in enumerate(loads):
            emit(Mem(opcode=isa.LOAD, pop_next=int(k == 0 and g_step >= 2), push_next=int(k == len(loads) - 1), **d))
        # compute stage
        if ci == 0:
            tb, te = e.uops[("tile", a)]
            emit(Gemm(reset=1, uop_bgn=tb, uop_end=te, iter_out=t.oc_t, iter_in=rows * ow,
                      dst_factor_out=rows * ow, dst_factor_in=1, pop_next=int(ti >= 2)))
        emit(Gemm(uop_bgn=ub, uop_end=ue, iter_out=t.ic_t, iter_in=ow, dst_factor_out=0, dst_factor_in=1,
                  src_factor_out=ih * g.wp, src_factor_in=sw, wgt_factor_out=g.kk, wgt_factor_in=0,
                  pop_prev=1, push_prev=1))
        if ci == len(chunks) - 1:
            alus = []
            for j_all, s in enumerate(steps):
                if s.vector:
                    j = vectors.index(s)
                    vb, ve = e.uops[("vec", a, j, oc0)]
                    alus.append(Alu(uop_bgn=vb, uop_end=ve, iter_out=t.oc_t, iter_in=rows * ow,
                                    dst_factor_out=rows * ow, dst_factor_in=1, src_factor_out=1, src_factor_in=0,
                                    alu_opcode=ALU_OPS[s.op]))
                else:
                    tb, te = e.uops[("tile", a)]
                    alus.append(Alu(uop_bgn=tb, uop_end=te, iter_out=t.oc_t, iter_in=rows * ow,
                                    dst_factor_out=rows * ow, dst_factor_in=1, alu_opcode=ALU_OPS[s.op], use_imm=1,
                                    imm=int(s.value)))
            if not alus:  # a plain layer: an ALU no-op (ADD 0) carries the token to the store stage
                tb, te = e.uops[("tile", a)]
                alus.append(Alu(uop_bgn=tb, uop_end=tb, alu_opcode=isa.ALU_ADD, use_imm=1))
            alus[-1] = replace(alus[-1], push_next=1)
            for insn in alus:
                emit(insn)
            # store stage: the tile's rows of each channel block, contiguous in DRAM
            emit(Mem(opcode=isa.STORE, memory_type=isa.MEM_OUT, sram_base=acc_base[a],
                     dram_base=out_off // cfg.out_elem_bytes + ((n * g.ocb + oc0) * oh + oh0) * ow,
                     y_size=t.oc_t, x_size=rows * ow, x_stride=oh * ow, pop_prev=1, push_prev=1))
    # drain the WAR tokens nobody waited for, then FINISH once the load stage is done too
    for k in range(min(2, n_steps)):
        emit(Mem(opcode=isa.LOAD, memory_type=isa.MEM_INP, pop_next=1, push_next=int(k == min(2, n_steps) - 1)))
    for _ in range(min(2, len(tiles))):
        emit(Mem(opcode=isa.LOAD, memory_type=isa.MEM_UOP, pop_next=1))
    emit(Finish(pop_prev=1))
    stream = isa.encode_stream(e.insns, cfg)
    counts: dict[str, int] = {}
    for insn in e.insns:
        counts[isa.OPCODE_NAMES[insn.opcode]] = counts.get(isa.OPCODE_NAMES[insn.opcode], 0) + 1
    macs = shape.batch * shape.out_channels * oh * ow * shape.in_channels * g.kk
    return VTAProgram(cfg, shape, stream, dram, inp_off, out_off, t, macs, counts)


def reference(x: np.ndarray, weight: np.ndarray, shape: ConvShape, steps: list[Step]) -> np.ndarray:
    """Numpy integer reference of a lowered layer (int64 throughout, independent of the lowering):
    direct convolution, then the epilogue steps, then the int8 narrowing."""
    top, left, bottom, right = shape.padding
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh, ow = shape.out_height, shape.out_width
    acc = np.zeros((shape.batch, shape.out_channels, oh, ow), np.int64)
    w = weight.astype(np.int64)
    for kh in range(shape.kernel_h):
        for kw in range(shape.kernel_w):
            y0, x0 = kh * shape.dilation[0], kw * shape.dilation[1]
            patch = xp[:, :, y0:y0 + shape.strides[0] * (oh - 1) + 1:shape.strides[0],
                       x0:x0 + shape.strides[1] * (ow - 1) + 1:shape.strides[1]]
            acc += np.einsum("nchw,oc->nohw", patch, w[:, :, kh, kw])
    for s in steps:
        v = np.asarray(s.value, np.int64).reshape(-1, 1, 1) if s.vector else np.int64(s.value)
        if s.op == "add":
            acc = acc + v
        elif s.op == "shr":
            acc = np.where(v >= 0, acc >> np.maximum(v, 0), acc << np.maximum(-v, 0))
        elif s.op == "max":
            acc = np.maximum(acc, v)
        else:
            acc = np.minimum(acc, v)
    return acc.astype(np.int8)


__all__ = ["Step", "Tiling", "VTAProgram", "Unfit", "lower_conv", "plan", "reference", "pack_activations",
           "unpack_activations", "pack_weights", "supported"]
