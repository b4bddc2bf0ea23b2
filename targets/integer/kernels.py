"""TE definitions of the integer kernels and the compile-time packing of their weights.

Written once for every registered dot-product ISA (:mod:`.isa`). Activations are NHWC in the
ISA's activation dtype (``NCHWc`` with a single channel block: input channels are
contiguous for the dot-product groups, output channels for the accumulator lanes).
Weights are packed once, at compile time, so that one instruction's operand is contiguous:

- conv2d / grouped conv2d: ``[G, ceil(OCg/L), KH, KW, ceil(ICg/Gk), L, Gk]`` where ``L`` and
  ``Gk`` are the ISA's lanes and group (:mod:`.intrin`), zero-padded;
- depthwise conv2d: ``[KH, KW, C]`` widened to float32 (exact) or int32 (at stride 1 on ISAs with
  a lane-wise dot product, :mod:`.depthwise_dot` instead);
- matmul ``x[..., K] @ W[K, N]``: ``[ceil(N/L), ceil(K/Gk), L, Gk]``;

in the ISA's weight dtype, as ``w + 128`` for unsigned × unsigned ISAs (``udot``, ``ummla``:
:attr:`~.isa.DotISA.weight_offset`, corrected by the legalization).

Accumulators are ``[R, L]`` blocks, one vector register each, where ``R`` is the ISA's
``rows`` (1, or 2 for a matrix instruction such as ``smmla``, whose rows are neighbouring
output pixels of a conv or rows of a matmul); the crop stage unblocks them. For ``R`` > 1
the padding stage also packs the activations into ``[R, Gk]`` blocks (:func:`_row_blocks`),
so each instruction's operands are single loads: a conv's padded input is stored once per
column with the column one stride to its right (twice the input), or, with a
:func:`width_fold`, as the runs of each pair of output pixels.

Channel counts that are not multiples of ``Gk`` or ``L`` are padded inside the kernel (input
channels with zeros in a padding stage, output channels by computing whole vectors and
cropping), so any shape works; convs with few input channels reduce over runs of kernel
columns instead (:func:`width_fold`). The first conv may read the model's NCHW input
directly. Reduction blocks carry the ``squeeze.int8`` annotation (and the ISA's name) that
the schedules (:mod:`.schedule`) look for after fusion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

from .isa import DotISA, packed_weight

KERNEL_ATTR = "squeeze.int8"  # block annotation: "conv2d", "depthwise" or "matmul"
ISA_ATTR = "squeeze.isa"  # block annotation: name of the DotISA the kernel is written for
MACS_ATTR = "squeeze.macs"  # block annotation: multiply-accumulates of the op (channel padding excluded)
WINDOW_SUM_ATTR = "squeeze.window_sum"  # block annotation of :func:`window_sum`'s box sum
# MetaSchedule hands blocks annotated so to the custom rule registered in .tuning.
CUSTOM_RULE = {"schedule_rule": "squeeze_int8"}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _i64(*dims: int) -> tuple[tirx.IntImm, ...]:
    """Shape with int64 extents, as Relax's legalized PrimFuncs use (FuseTIR compares them)."""
    return tuple(tirx.IntImm("int64", int(d)) for d in dims)


def _reduce(extent: int, name: str) -> tirx.IterVar:
    return te.reduce_axis((tirx.IntImm("int64", 0), tirx.IntImm("int64", extent)), name)


@dataclass(frozen=True)
class ConvShape:
    """A 2-D convolution on NHWC data, as the kernels see it.

    Attributes
    ----------
    batch, height, width, in_channels : int
        Input shape (NHWC).
    out_channels, kernel_h, kernel_w : int
        Weight shape (``OC`` output channels, ``IC / groups`` inputs each).
    strides, dilation : tuple of int
        (vertical, horizontal).
    padding : tuple of int
        (top, left, bottom, right).
    groups : int
        Channel groups (``in_channels`` for depthwise).
    """

    batch: int
    height: int
    width: int
    in_channels: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def out_height(self) -> int:
        span = self.dilation[0] * (self.kernel_h - 1) + 1
        return (self.height + self.padding[0] + self.padding[2] - span) // self.strides[0] + 1

    @property
    def out_width(self) -> int:
        span = self.dilation[1] * (self.kernel_w - 1) + 1
        return (self.width + self.padding[1] + self.padding[3] - span) // self.strides[1] + 1

    @property
    def depthwise(self) -> bool:
        return self.groups == self.in_channels == self.out_channels

    @property
    def macs(self) -> int:
        per_output = self.kernel_h * self.kernel_w * self.in_channels // self.groups
        return self.batch * self.out_height * self.out_width * self.out_channels * per_output


def width_fold(shape: ConvShape, isa: DotISA, layout: str) -> str:
    """How the kernel columns join the reduction for convs with few input channels.

    Padding a stem conv's 3 RGB channels to the ISA's group of 4 wastes a quarter of the
    work; padding the kernel row instead wastes less (7 columns → 8). Returns ``""`` (no
    fold: reduce over padded channels per column), ``"columns"`` (NHWC input: a pixel's
    window is ``KW × C`` consecutive bytes of a row, reduced as one run) or ``"planes"``
    (NCHW input: per channel plane, the ``KW`` consecutive bytes of a row are one run).
    """
    c, kw, grp = shape.in_channels, shape.kernel_w, isa.group
    if shape.groups != 1 or shape.dilation[1] != 1 or c % grp == 0:
        return ""
    if layout == "NCHW" and c * _ceil_div(kw, grp) <= kw * _ceil_div(c, grp):
        return "planes"  # at equal work still better: padding planes needs no transpose
    if layout == "NHWC" and _ceil_div(c * kw, grp) < kw * _ceil_div(c, grp):
        return "columns"
    return ""


def pack_conv_weight(weight_oihw: np.ndarray, shape: ConvShape, isa: DotISA, layout: str = "NHWC") -> np.ndarray:
    """OIHW int8 weights → ``[G, OCB, KH, KW, ICB, L, Gk]`` in the ISA's weight dtype, plus its
    ``weight_offset`` (padding stays 0, so padded taps add nothing).

    With a :func:`width_fold`, the runs it reduces take the place of the input channels
    (and the channels, for ``"planes"``, or nothing, for ``"columns"``, that of ``KW``).
    """
    fold = width_fold(shape, isa, layout)
    oc, c, kh, kw = weight_oihw.shape
    if fold == "columns":
        weight_oihw = weight_oihw.transpose(0, 2, 3, 1).reshape(oc, kh, kw * c).transpose(0, 2, 1)[..., None]
    elif fold == "planes":
        weight_oihw = weight_oihw.transpose(0, 3, 2, 1)
    groups = shape.groups
    oc, icg, kh, kw = weight_oihw.shape
    ocg, lanes, grp = oc // groups, isa.lanes, isa.group
    ocb, icb = _ceil_div(ocg, lanes), _ceil_div(icg, grp)
    w = np.zeros((groups, ocb * lanes, icb * grp, kh, kw), isa.weight_dtype)
    w[:, :ocg, :icg] = weight_oihw.reshape(groups, ocg, icg, kh, kw).astype(np.int32) + isa.weight_offset
    w = w.reshape(groups, ocb, lanes, icb, grp, kh, kw)
    return _stored(np.ascontiguousarray(w.transpose(0, 1, 5, 6, 3, 2, 4)), isa)


def _stored(packed: np.ndarray, isa: DotISA) -> np.ndarray:
    """``packed`` as stored: for sub-byte ISAs, the ``Gk`` weights of a lane's group (last axis)
    ``8 / bits`` per byte, weight ``j + m · s`` at bit ``m · bits`` of byte ``j`` (``s`` bytes)."""
    if not isa.sub_byte:
        return packed
    stride, bits = isa.stored_group, isa.weight_bits
    out = np.zeros(packed.shape[:-1] + (stride,), np.uint8)
    for m in range(8 // bits):
        out |= (packed[..., m * stride:(m + 1) * stride].astype(np.uint8) << (m * bits)).astype(np.uint8)
    return np.ascontiguousarray(out)


def _weight(weight: te.Tensor, index: tuple, j, isa: DotISA):
    """Weight ``j`` of a lane's group at ``index`` (all axes but the last) as int32 (sub-byte
    ISAs: the field :func:`.isa.packed_weight` unpacks, as their intrinsic's description reads it)."""
    if isa.sub_byte:
        return packed_weight(weight[(*index, j % isa.stored_group)], j, isa.group, isa.weight_bits)
    return weight[(*index, j)].astype("int32")


def _input(shape: ConvShape, layout: str, dtype: str) -> te.Tensor:
    dims = {"N": shape.batch, "C": shape.in_channels, "H": shape.height, "W": shape.width}
    return te.placeholder(_i64(*(dims[a] for a in layout)), dtype, name="data")


def _attrs(kind: str, isa: DotISA, macs: int) -> dict:
    return {KERNEL_ATTR: kind, ISA_ATTR: isa.name, MACS_ATTR: macs, **CUSTOM_RULE}


def _pixel(data: te.Tensor, shape: ConvShape, layout: str, pad_value: int, b, y, x, c, valid=True) -> tirx.PrimExpr:
    """Input channel ``c`` of padded pixel ``(y, x)`` of image ``b``: ``pad_value`` outside
    the image (or where ``valid`` is false)."""
    top, left = shape.padding[:2]
    inside = tirx.all(y >= top, y < top + shape.height, x >= left, x < left + shape.width, valid)
    index = {"N": b, "H": y - top, "W": x - left, "C": c}
    return tirx.if_then_else(inside, data[tuple(index[a] for a in layout)], tirx.const(pad_value, data.dtype))


def window_sum(shape: ConvShape, layout: str, dtype: str, pad_value: int) -> tirx.PrimFunc:
    """int32 sum of each output pixel's window of the padded input over its group's channels:
    ``[N, OH, OW, 1]`` (one group: it broadcasts over the output channels) or ``[N, OH, OW, OC]``
    (each group's sum over its output channels). A channel sum per padded pixel, then a box sum
    (any stride and dilation), in one function: the correction of a weight offset (``Σ x`` of
    ``Σ x·(w + offset)``)."""
    data = _input(shape, layout, dtype)
    groups, icg, ocg = shape.groups, shape.in_channels // shape.groups, shape.out_channels // shape.groups
    top, left, bottom, right = shape.padding
    c = _reduce(icg, "c")
    sums = te.compute(
        _i64(shape.batch, shape.height + top + bottom, shape.width + left + right, groups),
        lambda b, y, x, g: te.sum(_pixel(data, shape, layout, pad_value, b, y, x, g * icg + c).astype("int32"), axis=c),
        name="channel_sum")
    ry, rx = _reduce(shape.kernel_h, "ry"), _reduce(shape.kernel_w, "rx")
    (sh, sw), (dh, dw) = shape.strides, shape.dilation
    out = te.compute(
        _i64(shape.batch, shape.out_height, shape.out_width, 1 if groups == 1 else shape.out_channels),
        lambda b, y, x, o: te.sum(sums[b, y * sh + ry * dh, x * sw + rx * dw, o // ocg], axis=[ry, rx]),
        name="window_sum", attrs={WINDOW_SUM_ATTR: 1})
    return te.create_prim_func([data, out])


def _padded_input(data: te.Tensor, shape: ConvShape, layout: str, channels: int, pad_value: int) -> te.Tensor:
    """NHWC view of ``data`` (NHWC or NCHW), spatially padded with ``pad_value``, with
    ``channels`` channels per group (zeros appended)."""
    top, left, bottom, right = shape.padding
    icg = shape.in_channels // shape.groups
    if layout == "NHWC" and (top, left, bottom, right) == (0, 0, 0, 0) and channels == icg:
        return data
    return te.compute(_i64(shape.batch, shape.height + top + bottom, shape.width + left + right,
                           shape.groups * channels), _group_value(data, shape, layout, channels, pad_value), name="pad")


def _group_value(data: te.Tensor, shape: ConvShape, layout: str, channels: int, pad_value: int):
    """``(b, y, x, c) ->`` padded pixel value, ``channels`` channels per group (zeros appended)."""
    icg = shape.in_channels // shape.groups

    def value(b, y, x, c):
        g, ic = c // channels, c % channels
        return _pixel(data, shape, layout, pad_value, b, y, x, g * icg + ic, ic < icg)

    return value


def _padded_runs(data: te.Tensor, shape: ConvShape, layout: str, length: int, pad_value: int) -> te.Tensor:
    """Padded input for a :func:`width_fold`: NHWC rows as (column, channel) bytes
    (``[N, H, length]``) or NCHW planes (``[N, C, H, length]``), padded with ``pad_value``."""
    rows, value = shape.height + shape.padding[0] + shape.padding[2], _run_value(data, shape, layout, pad_value)
    if layout == "NCHW":
        return te.compute(_i64(shape.batch, shape.in_channels, rows, length), value, name="pad")
    return te.compute(_i64(shape.batch, rows, length), value, name="pad")


def _run_value(data: te.Tensor, shape: ConvShape, layout: str, pad_value: int):
    """``(b, [plane,] y, q) ->`` byte ``q`` of a padded row of a :func:`width_fold` (NHWC:
    (column, channel) bytes; NCHW: one channel plane)."""
    c = shape.in_channels
    if layout == "NCHW":
        return lambda b, ch, y, x: _pixel(data, shape, layout, pad_value, b, y, x, ch)
    return lambda b, y, q: _pixel(data, shape, layout, pad_value, b, y, q // c, q % c)


def _row_blocks(value, lead: tuple[int, ...], positions: int, length: int, stride: int, step: int,
                isa: DotISA) -> te.Tensor:
    """The matrix ISA's activation operands, each one contiguous ``[R, G]`` block:
    ``[*lead, positions, length / G, R, G]`` holds at position ``p``, reduction block ``k``
    the ``R`` runs ``value(*lead, p * stride + r * step, k * G + j)`` (``r < R``, ``j < G``)."""
    rows, grp = isa.rows, isa.group
    return te.compute(_i64(*lead, positions, length // grp, rows, grp),
                      lambda *i: value(*i[:-4], i[-4] * stride + i[-2] * step, i[-3] * grp + i[-1]), name="pad")


def conv2d(shape: ConvShape, isa: DotISA, pad_value: int = 0, layout: str = "NHWC") -> tirx.PrimFunc:
    """Grouped (or regular) conv2d: activations × packed weights → int32 NHWC.

    ``pad_value`` fills the spatial padding (the input's zero point); ``layout`` is the
    input's, NHWC or NCHW (read through the padding stage, so no transpose runs before).
    The accumulator is ``[N, OH, ceil(OW/R), G, OCB, R, L]``: ``R`` neighbouring output
    pixels (the rows of a matrix ISA) × ``L`` channels per instruction, cropped at the end.
    """
    lanes, grp, rows, groups = isa.lanes, isa.group, isa.rows, shape.groups
    ocg = shape.out_channels // groups
    fold = width_fold(shape, isa, layout)
    runs = {"": shape.in_channels // groups, "columns": shape.in_channels * shape.kernel_w,
            "planes": shape.kernel_w}[fold]
    kw = {"": shape.kernel_w, "columns": 1, "planes": shape.in_channels}[fold]
    ocb, icb, xb = _ceil_div(ocg, lanes), _ceil_div(runs, grp), _ceil_div(shape.out_width, rows)
    data = _input(shape, layout, isa.act_dtype)
    weight = te.placeholder(_i64(groups, ocb, shape.kernel_h, kw, icb, lanes, isa.stored_group), isa.weight_dtype,
                            name="weight")
    ry, rx, rc = _reduce(shape.kernel_h, "ry"), _reduce(kw, "rx"), _reduce(icb * grp, "rc")
    window = (_block_window(data, shape, isa, layout, pad_value, fold, icb * grp, xb) if rows > 1
              else _run_window(data, shape, layout, pad_value, fold, icb * grp))
    conv = te.compute(
        _i64(shape.batch, shape.out_height, xb, groups, ocb, rows, lanes),
        lambda b, y, x, g, o, r, i: te.sum(
            window(b, y, x, r, g, ry, rx, rc).astype("int32")
            * _weight(weight, (g, o, ry, rx, rc // grp, i), rc % grp, isa), axis=[ry, rx, rc]),
        name="conv", attrs=_attrs("conv2d", isa, shape.macs))

    def crop(b, y, x, c):  # one group: c itself (TVM's region solver fails on c % OC % L)
        g, o = (c // ocg, c % ocg) if groups > 1 else (0, c)
        return conv[b, y, x // rows, g, o // lanes, x % rows, o % lanes]

    out = te.compute(_i64(shape.batch, shape.out_height, shape.out_width, shape.out_channels), crop, name="crop")
    return te.create_prim_func([data, weight, out])


def _run_window(data: te.Tensor, shape: ConvShape, layout: str, pad_value: int, fold: str, length: int):
    """``(b, y, x, 0, g, ry, rx, rc) ->`` the activation of one-row ISAs: a padded input
    (:func:`_padded_input`, or :func:`_padded_runs` for a :func:`width_fold`) read in place."""
    (sh, sw), (dh, dw), icg = shape.strides, shape.dilation, shape.in_channels // shape.groups
    if not fold:
        padded = _padded_input(data, shape, layout, length, pad_value)
        return lambda b, y, x, r, g, ry, rx, rc: padded[b, y * sh + ry * dh, (x + r) * sw + rx * dw, g * length + rc]
    step = sw * (icg if fold == "columns" else 1)  # a run of a pixel's window starts at x * sw (* C)
    span = (shape.width + shape.padding[1] + shape.padding[3]) * (icg if fold == "columns" else 1)
    padded = _padded_runs(data, shape, layout, _ceil_div(max(span, (shape.out_width - 1) * step + length), 16) * 16,
                          pad_value)
    if fold == "planes":
        return lambda b, y, x, r, g, ry, rx, rc: padded[b, rx, y * sh + ry * dh, (x + r) * step + rc]
    return lambda b, y, x, r, g, ry, rx, rc: padded[b, y * sh + ry * dh, (x + r) * step + rx + rc]


def _block_window(data: te.Tensor, shape: ConvShape, isa: DotISA, layout: str, pad_value: int, fold: str,
                  length: int, blocks: int):
    """``(b, y, x, r, g, ry, rx, rc) ->`` the activation of a matrix ISA: output pixels
    ``R·x .. R·x + R-1`` read from :func:`_row_blocks` (per padded input column, the ``R``
    columns one stride apart; with a :func:`width_fold`, per block of output pixels, their runs)."""
    (sh, sw), (dh, dw), grp = shape.strides, shape.dilation, isa.group
    rows, height = isa.rows, shape.height + shape.padding[0] + shape.padding[2]
    if not fold:
        columns = (blocks - 1) * rows * sw + (shape.kernel_w - 1) * dw + 1
        packed = _row_blocks(_group_value(data, shape, layout, length, pad_value), (shape.batch, height), columns,
                             shape.groups * length, 1, sw, isa)
        return lambda b, y, x, r, g, ry, rx, rc: packed[b, y * sh + ry * dh, x * rows * sw + rx * dw,
                                                        g * (length // grp) + rc // grp, r, rc % grp]
    run = _run_value(data, shape, layout, pad_value)
    step = sw * (shape.in_channels if fold == "columns" else 1)
    if fold == "planes":
        packed = _row_blocks(lambda b, ch, y, p, c: run(b, ch, y, p + c), (shape.batch, shape.in_channels, height),
                             blocks, length, rows * step, step, isa)
        return lambda b, y, x, r, g, ry, rx, rc: packed[b, rx, y * sh + ry * dh, x, rc // grp, r, rc % grp]
    packed = _row_blocks(lambda b, y, p, c: run(b, y, p + c), (shape.batch, height), blocks, length,
                         rows * step, step, isa)
    return lambda b, y, x, r, g, ry, rx, rc: packed[b, y * sh + ry * dh, x, rc // grp, r, rc % grp]


def depthwise_dtype(shape: ConvShape) -> str:
    """Arithmetic of the depthwise kernel: float32 when it is exact, else int32.

    A window of ``KH × KW`` products of uint8 and int8 stays below 2^24 in magnitude up to
    514 taps (int8 × int8: 1024), so float32 fused multiply-adds (two per cycle, with each
    input pixel converted once per register tile) compute the exact integer sum, faster than
    an int32 multiply. The bound is taken for uint8 activations, which covers both.
    """
    return "float32" if shape.kernel_h * shape.kernel_w * 255 * 128 < 1 << 24 else "int32"


def depthwise_conv2d(shape: ConvShape, isa: DotISA, pad_value: int = 0, layout: str = "NHWC") -> tirx.PrimFunc:
    """Depthwise conv2d: activations × ``[KH, KW, C]`` weights (:func:`depthwise_dtype`) → int32
    NHWC (see :func:`conv2d` for ``pad_value`` and ``layout``); vectorized over channels, no
    dot-product instruction (``isa`` gives the activation dtype and the vector width)."""
    channels, dtype = shape.in_channels, depthwise_dtype(shape)
    data = _input(shape, layout, isa.act_dtype)
    weight = te.placeholder(_i64(shape.kernel_h, shape.kernel_w, channels), dtype, name="weight")
    padded = _padded_input(data, shape, layout, 1, pad_value)
    (sh, sw), (dh, dw) = shape.strides, shape.dilation
    ry, rx = _reduce(shape.kernel_h, "ry"), _reduce(shape.kernel_w, "rx")
    acc = te.compute(
        _i64(shape.batch, shape.out_height, shape.out_width, channels),
        lambda b, y, x, c: te.sum(padded[b, y * sh + ry * dh, x * sw + rx * dw, c].astype(dtype) * weight[ry, rx, c],
                                  axis=[ry, rx]),
        name="depthwise", attrs=_attrs("depthwise", isa, shape.macs))
    out = te.compute(acc.shape, lambda *i: acc[i].astype("int32"), name="exact")
    return te.create_prim_func([data, weight, out])


def pack_depthwise_weight(weight_oihw: np.ndarray, shape: ConvShape) -> np.ndarray:
    """``[C, 1, KH, KW]`` int8 → ``[KH, KW, C]`` in the kernel's :func:`depthwise_dtype`."""
    return np.ascontiguousarray(weight_oihw[:, 0].transpose(1, 2, 0).astype(depthwise_dtype(shape)))


def pack_matmul_weight(weight_kn: np.ndarray, isa: DotISA) -> np.ndarray:
    """``[K, N]`` int8 → ``[ceil(N/L), ceil(K/Gk), L, Gk]`` in the ISA's weight dtype, plus its
    ``weight_offset`` (padding stays 0)."""
    k, n = weight_kn.shape
    lanes, grp = isa.lanes, isa.group
    w = np.zeros((_ceil_div(k, grp) * grp, _ceil_div(n, lanes) * lanes), isa.weight_dtype)
    w[:k, :n] = weight_kn.astype(np.int32) + isa.weight_offset
    w = w.reshape(-1, grp, w.shape[1] // lanes, lanes)
    return _stored(np.ascontiguousarray(w.transpose(2, 0, 3, 1)), isa)


def matmul(batch_shape: tuple[int, ...], rows: int, k: int, n: int, isa: DotISA) -> tirx.PrimFunc:
    """``x[..., rows, K]`` @ packed ``W`` → int32 ``[..., rows, N]`` (rows padded to the ISA's
    ``R`` with zeros, like ``K``); the accumulator is ``[..., rows/R, N/L, R, L]``, cropped at the end."""
    lanes, grp, r_isa = isa.lanes, isa.group, isa.rows
    kp, nb, rb = _ceil_div(k, grp) * grp, _ceil_div(n, lanes), _ceil_div(rows, r_isa)
    data = te.placeholder(_i64(*batch_shape, rows, k), isa.act_dtype, name="data")
    weight = te.placeholder(_i64(nb, kp // grp, lanes, isa.stored_group), isa.weight_dtype, name="weight")

    def value(*i):
        return tirx.if_then_else(tirx.all(i[-1] < k, i[-2] < rows), data[i], tirx.const(0, isa.act_dtype))

    if r_isa > 1:
        packed = _row_blocks(value, batch_shape, rb, kp, r_isa, 1, isa)

        def operand(block, r, rk):  # block: (*batch, row block)
            return packed[(*block, rk // grp, r, rk % grp)]
    else:
        padded = te.compute(_i64(*batch_shape, rows, kp), value, name="pad") if kp != k else data

        def operand(block, r, rk):
            return padded[(*block[:-1], block[-1] + r, rk)]
    rk = _reduce(kp, "rk")
    acc = te.compute(
        _i64(*batch_shape, rb, nb, r_isa, lanes),
        lambda *i: te.sum(operand(i[:-3], i[-2], rk).astype("int32")
                          * _weight(weight, (i[-3], rk // grp, i[-1]), rk % grp, isa), axis=rk),
        name="matmul", attrs=_attrs("matmul", isa, math.prod(batch_shape) * rows * k * n))
    out = te.compute(_i64(*batch_shape, rows, n),
                     lambda *i: acc[(*i[:-2], i[-2] // r_isa, i[-1] // lanes, i[-2] % r_isa, i[-1] % lanes)],
                     name="crop")
    return te.create_prim_func([data, weight, out])
