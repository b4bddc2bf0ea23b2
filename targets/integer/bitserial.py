"""Bit-serial integer kernels: conv2d and matmul on bit-planes with AND + popcount.

An operand of few bits is a sum of bit-planes, ``v = Σ_p c_p · bit_p(v) + offset``:

- activations of ``A`` bits: planes ``p < A`` of their codes, ``c_p = 2^p`` (two's complement
  when signed: ``c_{A-1} = -2^(A-1)``), no offset;
- weights of ``W`` bits: the same two's-complement planes (ternary weights are 2-bit), or,
  for binary ``±1`` weights, the single plane ``b = (w > 0)`` with ``c = 2`` and offset ``-1``
  (``w = 2b - 1``, the bipolar form).

The planes are packed along the input channels into words (:class:`Packing`: 64 bits where a
vector popcount counts 64-bit lanes, as AVX-512's ``vpopcntq``; 16 on NEON, whose ``cnt`` counts
bytes that ``uadalp`` adds pairwise into 16-bit lanes), so one AND +
popcount multiplies a word's channels at once:
``Σ_k x_k w_k = Σ_{i,j} c_i c_j · popcount(X_i & W_j) + offset · Σ_k x_k``. The kernels
compute the first sum; the activation sum ``Σ x`` over each output's window (bipolar weights
only), once per output pixel rather than per channel, is the legalization's
(:mod:`.bitserial_legalize`), an input of the fused epilogue. Activations are packed into planes inside the kernel (a stage per image), weights
at compile time. Each plane pair has its own accumulator (``[.., A, W, L]`` blocks of ``L``
words, one vector each), combined once per register tile: the inner loop is AND, popcount
and add only (x86 ``vpandq/vpopcntq/vpaddq``, AArch64 ``and/cnt/uadalp``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

from .kernels import MACS_ATTR, ConvShape, _i64, _input, _padded_input, _reduce

# Block annotations of the popcount reduction: its kind ("conv2d" or "matmul", a key apart from
# the int8 kernels' so that their schedules and tuning space leave it alone) and its bits,
# "a{A}w{W}" (W "b" for bipolar weights).
KIND_ATTR = "squeeze.bitserial"
BITS_ATTR = "squeeze.bits"


@dataclass(frozen=True)
class Planes:
    """Bit-plane encoding of an operand: ``value = Σ_p coefs[p] · bit_p + offset``."""

    coefs: tuple[int, ...]
    offset: int = 0

    @property
    def bits(self) -> int:
        return len(self.coefs)

    @property
    def bipolar(self) -> bool:
        return self.offset != 0


def twos_complement(bits: int, signed: bool) -> Planes:
    """Planes of ``bits``-bit codes, the top one negative when ``signed``."""
    coefs = [1 << p for p in range(bits)]
    if signed:
        coefs[-1] = -coefs[-1]
    return Planes(tuple(coefs))


BIPOLAR = Planes((2,), -1)


def code_bits(lo: int, hi: int) -> tuple[int, bool]:
    """Fewest bits holding every integer of ``[lo, hi]`` and whether they are signed."""
    if lo >= 0:
        return max(1, int(hi).bit_length()), False
    return max(int(-lo - 1).bit_length(), int(hi).bit_length()) + 1, True


def weight_planes(weight: np.ndarray) -> Planes:
    """The encoding of integer weights: bipolar if every value is ``±1``, else the fewest
    two's-complement planes."""
    values = np.unique(weight)
    if set(values.tolist()) <= {-1, 1}:
        return BIPOLAR
    return twos_complement(*code_bits(int(values.min()), int(values.max())))


def plane_bits(weight: np.ndarray, planes: Planes) -> np.ndarray:
    """The planes of ``weight`` as 0/1 arrays, stacked on a new last axis."""
    if planes.bipolar:
        return (weight > 0)[..., None].astype(np.uint64)
    codes = weight.astype(np.int64) & ((1 << planes.bits) - 1)
    return ((codes[..., None] >> np.arange(planes.bits)) & 1).astype(np.uint64)


@dataclass(frozen=True)
class Packing:
    """How planes are packed: ``word``-bit words (the popcount and accumulator lanes), ``lanes``
    words per vector register."""

    word: int
    lanes: int

    @property
    def dtype(self) -> str:
        return f"uint{self.word}"


def packing(channels: int, widest: int, vector_bits: int) -> Packing:
    """Words of at most ``widest`` bits, halved while they are more than twice ``channels`` (no
    narrower than 16); ``vector_bits`` wide registers."""
    word = widest
    while word > 16 and word >= 2 * channels:
        word //= 2
    return Packing(word, vector_bits // word)


def accumulates(steps: int, pack: Packing) -> bool:
    """Whether ``steps`` popcounts of a word fit its accumulator lane (``word · steps < 2^word``)."""
    return pack.word * steps < 1 << pack.word


def pack_words(bits: np.ndarray, word: int) -> np.ndarray:
    """0/1 ``[..., K]`` → ``[..., ceil(K/word)]`` words (bit ``k % word`` of word ``k // word``)."""
    k = bits.shape[-1]
    padded = np.zeros((*bits.shape[:-1], -(-k // word) * word), np.uint64)
    padded[..., :k] = bits
    shaped = padded.reshape(*bits.shape[:-1], -1, word)
    return (shaped << np.arange(word, dtype=np.uint64)).sum(axis=-1, dtype=np.uint64).astype(f"uint{word}")


def pack_conv_weight(weight_oihw: np.ndarray, shape: ConvShape, planes: Planes, pack: Packing) -> np.ndarray:
    """OIHW integer weights → ``[G, ceil(OCg/L), KH, KW, CW, planes, L]`` words (zero-padded)."""
    groups, word, lanes = shape.groups, pack.word, pack.lanes
    oc, icg, kh, kw = weight_oihw.shape
    ocg = oc // groups
    ocb = -(-ocg // lanes)
    w = np.zeros((groups, ocb * lanes, icg, kh, kw), np.int64)
    w[:, :ocg] = weight_oihw.reshape(groups, ocg, icg, kh, kw)
    words = pack_words(plane_bits(w.transpose(0, 1, 3, 4, 2), planes).swapaxes(-1, -2), word)  # [G,OC,KH,KW,P,CW]
    words = words.reshape(groups, ocb, lanes, kh, kw, planes.bits, -1)
    return np.ascontiguousarray(words.transpose(0, 1, 3, 4, 6, 5, 2))


def pack_matmul_weight(weight_kn: np.ndarray, planes: Planes, pack: Packing) -> np.ndarray:
    """``[K, N]`` integer weights → ``[ceil(N/L), KW, planes, L]`` words (zero-padded)."""
    lanes = pack.lanes
    k, n = weight_kn.shape
    nb = -(-n // lanes)
    w = np.zeros((nb * lanes, k), np.int64)
    w[:n] = weight_kn.T
    words = pack_words(plane_bits(w, planes).swapaxes(-1, -2), pack.word)  # [N, P, KW]
    return np.ascontiguousarray(words.reshape(nb, lanes, planes.bits, -1).transpose(0, 3, 2, 1))


def _pack_planes(value, lead: tuple[int, ...], channels: int, bits: int, word: int) -> te.Tensor:
    """``[*lead, ceil(channels/word), bits]`` words of the activations' planes:
    ``value(*lead, c)`` is the code of channel ``c`` (zero beyond ``channels``)."""
    dtype = f"uint{word}"
    b = _reduce(word, "b")

    def plane_word(*i):
        *rest, w, p = i
        code = value(*rest, w * word + b).astype("int32")
        bit = tirx.bitwise_and(tirx.shift_right(code, p.astype("int32")), 1)
        return te.sum(tirx.shift_left(bit.astype(dtype), b.astype(dtype)), axis=b)

    return te.compute(_i64(*lead, -(-channels // word), bits), plane_word, name="planes")


def _coef(planes: Planes, p: tirx.PrimExpr) -> tirx.PrimExpr:
    """``planes.coefs[p]`` for a plane index variable ``p``."""
    out = tirx.const(planes.coefs[-1], "int32")
    for k in range(planes.bits - 2, -1, -1):
        out = tirx.Select(p == k, tirx.const(planes.coefs[k], "int32"), out)
    return out


def _combine(lead: tuple[int, ...], channels: int, act: Planes, weight: Planes, read) -> te.Tensor:
    """int32 ``[*lead, channels]``: ``Σ_{i,j} c_i c_j · read(*index, i, j)``, a reduction over
    the plane pairs, so the schedule can place it per register tile."""
    ri, rj = _reduce(act.bits, "ri"), _reduce(weight.bits, "rj")
    return te.compute(_i64(*lead, channels), lambda *i: te.sum(
        read(*i, ri, rj).astype("int32") * _coef(act, ri) * _coef(weight, rj), axis=[ri, rj]), name="combine")


def _attrs(kind: str, act: Planes, weight: Planes, macs: int) -> dict:
    return {KIND_ATTR: kind, BITS_ATTR: bits_label(act, weight), MACS_ATTR: macs}


def bits_label(act: Planes, weight: Planes) -> str:
    """``a{A}w{W}``: activation bits and weight planes (``wb``: bipolar weights)."""
    return f"a{act.bits}w{'b' if weight.bipolar else weight.bits}"


def conv2d(shape: ConvShape, act: Planes, weight: Planes, pack: Packing, act_dtype: str, pad_value: int = 0,
           layout: str = "NHWC") -> tirx.PrimFunc:
    """Bit-serial conv2d (any groups): ``act_dtype`` codes in ``layout`` × packed weights
    (:func:`pack_conv_weight`) → int32 NHWC; ``pad_value`` fills the spatial padding."""
    groups, icg = shape.groups, shape.in_channels // shape.groups
    ocg, word, lanes, dtype = shape.out_channels // groups, pack.word, pack.lanes, pack.dtype
    cw, ocb = -(-icg // word), -(-ocg // lanes)
    data = _input(shape, layout, act_dtype)
    padded = _padded_input(data, shape, layout, cw * word, pad_value)
    rows, cols = (shape.height + shape.padding[0] + shape.padding[2], shape.width + shape.padding[1] + shape.padding[3])
    def code(b, y, x, g, c):  # the padding stage fills padded channels with pad_value: zero them
        return tirx.if_then_else(c < icg, padded[b, y, x, g * cw * word + c], tirx.const(0, act_dtype))

    planes = _pack_planes(code, (shape.batch, rows, cols, groups), cw * word, act.bits, word)
    wt = te.placeholder(_i64(groups, ocb, shape.kernel_h, shape.kernel_w, cw, weight.bits, lanes), dtype, name="weight")
    (sh, sw), (dh, dw) = shape.strides, shape.dilation
    ry, rx, rw = _reduce(shape.kernel_h, "ry"), _reduce(shape.kernel_w, "rx"), _reduce(cw, "rw")

    def window(b, y, x, g, i):
        return planes[b, y * sh + ry * dh, x * sw + rx * dw, g, rw, i]

    out_shape = (shape.batch, shape.out_height, shape.out_width)
    acc = te.compute(
        _i64(*out_shape, groups, ocb, act.bits, weight.bits, lanes),
        lambda b, y, x, g, o, i, j, lane: te.sum(
            tirx.popcount(tirx.bitwise_and(window(b, y, x, g, i), wt[g, o, ry, rx, rw, j, lane])), axis=[ry, rx, rw]),
        name="bitserial", attrs=_attrs("conv2d", act, weight, shape.macs))

    def read(b, y, x, c, i, j):
        g, o = (c // ocg, c % ocg) if groups > 1 else (_i64(0)[0], c)
        return acc[b, y, x, g, o // lanes, i, j, o % lanes]

    out = _combine(out_shape, shape.out_channels, act, weight, read)
    return te.create_prim_func([data, wt, out])


def matmul(batch_shape: tuple[int, ...], rows: int, k: int, n: int, act: Planes, weight: Planes, pack: Packing,
           act_dtype: str) -> tirx.PrimFunc:
    """Bit-serial ``x[..., rows, K] @ W`` (:func:`pack_matmul_weight`) → int32 ``[..., rows, N]``."""
    word, lanes, dtype = pack.word, pack.lanes, pack.dtype
    kw, nb = -(-k // word), -(-n // lanes)
    data = te.placeholder(_i64(*batch_shape, rows, k), act_dtype, name="data")

    def code(*i):
        return tirx.if_then_else(i[-1] < k, data[(*i[:-1], tirx.min(i[-1], k - 1))], tirx.const(0, act_dtype))

    planes = _pack_planes(code, (*batch_shape, rows), kw * word, act.bits, word)
    wt = te.placeholder(_i64(nb, kw, weight.bits, lanes), dtype, name="weight")
    rw = _reduce(kw, "rw")
    acc = te.compute(
        _i64(*batch_shape, rows, nb, act.bits, weight.bits, lanes),
        lambda *i: te.sum(tirx.popcount(tirx.bitwise_and(planes[(*i[:-4], rw, i[-3])], wt[i[-4], rw, i[-2], i[-1]])),
                          axis=rw),
        name="bitserial", attrs=_attrs("matmul", act, weight, math.prod(batch_shape) * rows * k * n))
    out = _combine((*batch_shape, rows), n, act, weight,
                   lambda *i: acc[(*i[:-3], i[-3] // lanes, i[-2], i[-1], i[-3] % lanes)])
    return te.create_prim_func([data, wt, out])
