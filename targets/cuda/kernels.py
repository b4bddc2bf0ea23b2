"""TE definitions of the CUDA integer kernels and the compile-time packing of their weights.

Tensor-core layers are one GEMM shape, ``C[M, N] = Σ_k A[M, K] · W[N, K]`` in int32:

- int8 dense / batched matmul ``x[..., rows, K] @ W[K, N]``: ``M = Π batch · rows``;
- int8 conv2d as an implicit GEMM on NHWC data: ``M = N·OH·OW`` output pixels, ``K = KH·KW·ICp``
  over (kernel row, kernel column, input channel); the im2col matrix ``A`` is never stored: its
  stage is inlined into the shared-memory copy (:mod:`.schedule`).

Weights are packed once, at compile time, to ``W[Np, Kp]`` int8 (output channels × reduction,
``K`` contiguous: the ``col`` operand of ``mma.sync.m16n8k32``), zero-padded to the tile
(:class:`GemmTile`); the kernel pads ``M`` the same way and crops its result. Input channels are
padded to :data:`CHANNEL_ALIGN` per kernel tap so that every 16-byte copy of ``A`` is one tap's
contiguous channels. Grouped and depthwise convs run on CUDA cores (:func:`direct_conv2d`).
Kernel blocks carry :data:`KERNEL_ATTR` and their tile (:data:`TILE_ATTR`), which the schedules
read after fusion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

from ..integer.kernels import ConvShape

KERNEL_ATTR = "squeeze.cuda"  # block annotation: "gemm" or "direct"
TILE_ATTR = "squeeze.cuda_tile"  # block annotation: GemmTile.key() of a "gemm" block
VECTOR_ATTR = "squeeze.cuda_a_vector"  # block annotation: bytes per copy of A (16, or 1 when unaligned)
MACS_ATTR = "squeeze.macs"
CHANNEL_ALIGN = 16  # int8 channels per 16-byte cp.async chunk


@dataclass(frozen=True)
class GemmTile:
    """Tiling of one tensor-core GEMM (the tuning space's knobs).

    Attributes
    ----------
    block_m, block_n : int
        Output tile of a thread block (rows of ``A``, rows of ``W``).
    warp_m, warp_n : int
        Output tile of a warp (multiples of 16: whole ``m16n16`` fragment pairs).
    chunk_k : int
        Reduction elements staged in shared memory per pipeline step (multiple of 32).
    stages : int
        Shared-memory buffers of the cp.async pipeline (2: double buffering).
    """

    block_m: int = 128
    block_n: int = 128
    warp_m: int = 64
    warp_n: int = 64
    chunk_k: int = 64
    stages: int = 2

    @property
    def warps(self) -> int:
        return (self.block_m // self.warp_m) * (self.block_n // self.warp_n)

    def valid(self) -> bool:
        """Whether the tile splits into warps, fragments and 16-byte copies exactly."""
        copies = self.warps * 32 * 16  # bytes one pass of the block's threads copies
        return (self.block_m % self.warp_m == 0 and self.block_n % self.warp_n == 0
                and self.warp_m % 16 == 0 and self.warp_n % 16 == 0 and self.chunk_k % 32 == 0
                and self.block_m * self.chunk_k % copies == 0 and self.block_n * self.chunk_k % copies == 0
                and self.stages >= 2 and self.warps <= 32)

    def key(self) -> str:
        return "x".join(str(v) for v in (self.block_m, self.block_n, self.warp_m, self.warp_n, self.chunk_k,
                                          self.stages))

    @classmethod
    def from_key(cls, key: str) -> "GemmTile":
        return cls(*(int(v) for v in str(key).split("x")))


def pick_tile(m: int, n: int, k: int) -> GemmTile:
    """The default tile of an ``M × N × K`` GEMM: the largest block that small ``M`` or ``N``
    does not leave mostly padding (batch-1 layers get 32-row blocks)."""
    block_m = 128 if m >= 1024 else 64 if m >= 256 else 32
    block_n = 128 if n >= 128 else 64 if n >= 64 else 32
    warp_m, warp_n = min(block_m, 64), min(block_n, 64)
    chunk = 64 if k >= 64 else 32
    tile = GemmTile(block_m, block_n, warp_m, warp_n, chunk, 2)
    while not tile.valid():  # too few threads to copy a chunk in one 16-byte pass: wider chunk
        tile = GemmTile(block_m, block_n, warp_m, warp_n, tile.chunk_k * 2, 2)
    return tile


def _ceil_to(a: int, b: int) -> int:
    return -(-a // b) * b


def _i64(*dims: int) -> tuple[tirx.IntImm, ...]:
    return tuple(tirx.IntImm("int64", int(d)) for d in dims)


def _gemm(value, m: int, n: int, k: int, tile: GemmTile, macs: int, aligned: bool):
    """The padded GEMM of ``value(i, kk)`` (the implicit ``A``, whose 16-byte chunks are
    contiguous if ``aligned``) with a packed weight placeholder: returns ``(weight, C[Mp, Np])``."""
    mp, np_, kp = _ceil_to(m, tile.block_m), _ceil_to(n, tile.block_n), _ceil_to(k, tile.chunk_k)
    a = te.compute(_i64(mp, kp), value, name="im2col")
    weight = te.placeholder(_i64(np_, kp), "int8", name="weight")
    rk = te.reduce_axis((tirx.IntImm("int64", 0), tirx.IntImm("int64", kp)), "rk")
    acc = te.compute(_i64(mp, np_), lambda i, j: te.sum(a[i, rk].astype("int32") * weight[j, rk].astype("int32"),
                                                        axis=rk),
                     name="gemm", attrs={KERNEL_ATTR: "gemm", TILE_ATTR: tile.key(), MACS_ATTR: macs,
                            VECTOR_ATTR: CHANNEL_ALIGN if aligned else 1})
    return weight, acc


def gemm_shape(shape: ConvShape) -> tuple[int, int, int]:
    """``(M, N, K)`` of a conv's implicit GEMM (``K`` with channels padded per tap)."""
    return (shape.batch * shape.out_height * shape.out_width, shape.out_channels,
            shape.kernel_h * shape.kernel_w * _ceil_to(shape.in_channels, CHANNEL_ALIGN))


def conv2d(shape: ConvShape, tile: GemmTile):
    """Implicit-GEMM conv2d (``groups`` 1, no padding: the legalization pads the input first):
    int8 NHWC data × packed weights (:func:`pack_conv_weight`) → int32 NHWC.

    ``A`` has no predicate, so each 16-byte copy is one ``cp.async``: the rows past ``M`` and
    the reduction past ``K`` read clamped (valid) addresses, and multiply zero weights or are
    cropped.
    """
    m, n, k = gemm_shape(shape)
    icp, hw, taps = _ceil_to(shape.in_channels, CHANNEL_ALIGN), shape.out_height * shape.out_width, \
        shape.kernel_h * shape.kernel_w
    (sh, sw), (dh, dw) = shape.strides, shape.dilation
    data = te.placeholder(_i64(shape.batch, shape.height, shape.width, shape.in_channels), "int8", name="data")

    def value(i, kk):
        i = tirx.min(i, m - 1)
        b, y, x = i // hw, i % hw // shape.out_width, i % shape.out_width
        tap, c = tirx.min(kk // icp, taps - 1), kk % icp
        if icp != shape.in_channels:
            c = tirx.min(c, shape.in_channels - 1)
        return data[b, y * sh + tap // shape.kernel_w * dh, x * sw + tap % shape.kernel_w * dw, c]

    weight, acc = _gemm(value, m, n, k, tile, shape.macs, icp == shape.in_channels)
    out = te.compute(_i64(shape.batch, shape.out_height, shape.out_width, n),
                     lambda b, y, x, c: acc[(b * shape.out_height + y) * shape.out_width + x, c], name="crop")
    return te.create_prim_func([data, weight, out])


def pack_conv_weight(weight_oihw: np.ndarray, shape: ConvShape, tile: GemmTile) -> np.ndarray:
    """``[OC, IC, KH, KW]`` int8 → ``W[Np, Kp]``: per output channel the ``(kh, kw, ic)`` taps,
    channels padded to :data:`CHANNEL_ALIGN`, all zero-padded to the tile."""
    _, n, k = gemm_shape(shape)
    oc, ic, kh, kw = weight_oihw.shape
    taps = np.zeros((oc, kh, kw, _ceil_to(ic, CHANNEL_ALIGN)), np.int8)
    taps[..., :ic] = weight_oihw.transpose(0, 2, 3, 1)
    out = np.zeros((_ceil_to(n, tile.block_n), _ceil_to(k, tile.chunk_k)), np.int8)
    out[:oc, :k] = taps.reshape(oc, k)
    return out


def matmul(batch_shape: tuple[int, ...], rows: int, k: int, n: int, tile: GemmTile):
    """int8 ``x[..., rows, K]`` @ packed ``W`` (:func:`pack_matmul_weight`) → int32 ``[..., rows, N]``."""
    m = math.prod(batch_shape) * rows
    data = te.placeholder(_i64(*batch_shape, rows, k), "int8", name="data")
    strides = [math.prod(batch_shape[i + 1:]) * rows for i in range(len(batch_shape))]

    kp = _ceil_to(k, tile.chunk_k)

    def value(i, kk):  # clamped, not predicated (see conv2d); 16-byte chunks stay whole
        i = tirx.min(i, m - 1)
        if k % CHANNEL_ALIGN:
            kk = tirx.min(kk, k - 1)
        elif kp != k:
            kk = tirx.min(kk // CHANNEL_ALIGN, k // CHANNEL_ALIGN - 1) * CHANNEL_ALIGN + kk % CHANNEL_ALIGN
        return data[tuple([i // s % d for s, d in zip(strides, batch_shape)] + [i % rows, kk])]

    weight, acc = _gemm(value, m, n, k, tile, m * k * n, k % CHANNEL_ALIGN == 0)

    def crop(*i):
        flat = sum((i[d] * strides[d] for d in range(len(batch_shape))), tirx.const(0, "int64")) + i[-2]
        return acc[flat, i[-1]]

    out = te.compute(_i64(*batch_shape, rows, n), crop, name="crop")
    return te.create_prim_func([data, weight, out])


def pack_matmul_weight(weight_kn: np.ndarray, tile: GemmTile) -> np.ndarray:
    """``[K, N]`` int8 → ``W[Np, Kp]`` (transposed, zero-padded to the tile)."""
    k, n = weight_kn.shape
    out = np.zeros((_ceil_to(n, tile.block_n), _ceil_to(k, tile.chunk_k)), np.int8)
    out[:n, :k] = weight_kn.T
    return out


def direct_conv2d(shape: ConvShape, pad_value: int = 0, layout: str = "NHWC"):
    """Grouped / depthwise conv2d on CUDA cores: int8 data × ``[OC, KH, KW, IC/G]`` int8 weights
    (:func:`pack_direct_weight`) → int32 NHWC, one output per thread."""
    icg, ocg = shape.in_channels // shape.groups, shape.out_channels // shape.groups
    (sh, sw), (dh, dw), (top, left) = shape.strides, shape.dilation, shape.padding[:2]
    dims = {"N": shape.batch, "C": shape.in_channels, "H": shape.height, "W": shape.width}
    data = te.placeholder(_i64(*(dims[a] for a in layout)), "int8", name="data")
    weight = te.placeholder(_i64(shape.out_channels, shape.kernel_h, shape.kernel_w, icg), "int8", name="weight")
    ry, rx, rc = (te.reduce_axis((tirx.IntImm("int64", 0), tirx.IntImm("int64", e)), name)
                  for e, name in ((shape.kernel_h, "ry"), (shape.kernel_w, "rx"), (icg, "rc")))

    def pixel(b, y, x, c):
        iy, ix = y * sh + ry * dh - top, x * sw + rx * dw - left
        index = {"N": b, "H": iy, "W": ix, "C": c // ocg * icg + rc}
        inside = tirx.all(iy >= 0, iy < shape.height, ix >= 0, ix < shape.width)
        return tirx.if_then_else(inside, data[tuple(index[a] for a in layout)], tirx.const(pad_value, "int8"))

    out = te.compute(
        _i64(shape.batch, shape.out_height, shape.out_width, shape.out_channels),
        lambda b, y, x, c: te.sum(pixel(b, y, x, c).astype("int32") * weight[c, ry, rx, rc].astype("int32"),
                                  axis=[ry, rx, rc]),
        name="direct", attrs={KERNEL_ATTR: "direct", MACS_ATTR: shape.macs})
    return te.create_prim_func([data, weight, out])


def pack_direct_weight(weight_oihw: np.ndarray) -> np.ndarray:
    """``[OC, IC/G, KH, KW]`` int8 → ``[OC, KH, KW, IC/G]``."""
    return np.ascontiguousarray(weight_oihw.transpose(0, 2, 3, 1).astype(np.int8))
