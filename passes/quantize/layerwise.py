"""Layer-wise reconstruction data: each conv/matmul layer as a small numpy least-squares problem.

Post-training methods that look at a layer's *output* (AdaRound, output-MSE range search,
per-layer bias correction) need, per layer, samples of its input in the matrix form
``out[m, g, o] = Σ_k x[m, g, k] · w[g, o, k]``: sampled output positions ``m`` (im2col rows of
a conv, rows of a matmul's input), groups ``g`` (one for a matmul or dense conv, the channels of
a depthwise conv) and the weights regrouped to match. This module finds those layers
(:func:`layer_sites`), samples their input rows during calibration (:class:`RowSampler`) and
fake-quantizes with a scheme's specs (:func:`fake_quant`); realization stays in
:mod:`.realize`, which takes the result as per-layer weights, ranges and bias shifts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from compiler.ir import bindings, op_name, single_consumer, use_counts

from .schemes import QuantSpec

Const = tvm.ir.expr.Constant
ROW_FLOATS = 1 << 21     # sampled input values kept per layer (8 MiB of float32)
MAX_ROWS, MIN_ROWS = 2048, 256


@dataclass
class Site:
    """One conv2d (NCHW/OIHW) or matmul (weights ``[K, N]``) layer with constant weights."""

    var: relax.Var             # the layer's binding var in ``main``
    x: relax.Var               # its input
    weight: np.ndarray
    bias: np.ndarray | None    # a constant per-channel add right after it
    conv: dict | None          # strides, padding, dilation, groups (None: matmul)

    @property
    def groups(self) -> int:
        return self.conv["groups"] if self.conv else 1

    @property
    def axis(self) -> int:
        """The weight's output-channel axis (per-channel scales run along it)."""
        return 0 if self.conv else 1

    def grouped(self, weight: np.ndarray | None = None) -> np.ndarray:
        """``weight`` (default: the layer's) as ``[G, O/G, K]``."""
        w = self.weight if weight is None else weight
        if self.conv is None:
            return w.T[None]
        return w.reshape(self.groups, w.shape[0] // self.groups, -1)

    def ungrouped(self, grouped: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`grouped`."""
        return grouped[0].T if self.conv is None else grouped.reshape(self.weight.shape)

    def channel_grouped(self, values: np.ndarray) -> np.ndarray:
        """Per-output-channel ``values`` (a scale, a bias) as ``[G, O/G]``."""
        channels = self.weight.shape[self.axis]
        return np.broadcast_to(np.asarray(values).reshape(-1), (channels,)).reshape(self.groups, -1)


def layer_sites(func: relax.Function) -> list[Site]:
    """The conv/matmul layers of ``func`` with constant weights, in order."""
    uses, consumer = use_counts(func)
    sites = []
    for b in bindings(func):
        op = op_name(b.value)
        if op not in ("relax.nn.conv2d", "relax.matmul") or not isinstance(b.value.args[1], Const) \
                or not isinstance(b.value.args[0], relax.Var):
            continue
        weight = b.value.args[1].value.numpy()
        conv = None
        if op == "relax.nn.conv2d":
            a = b.value.attrs
            if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or weight.ndim != 4:
                continue
            conv = {"strides": [int(s) for s in a.strides], "padding": [int(p) for p in a.padding],
                    "dilation": [int(d) for d in a.dilation], "groups": int(a.groups)}
        elif weight.ndim != 2:
            continue
        channels = weight.shape[0 if conv else 1]
        bias = None
        add = single_consumer(b.var, uses, consumer, ("relax.add",))
        if add is not None:
            lhs, rhs = add.value.args
            other = rhs if lhs.same_as(b.var) else lhs
            if isinstance(other, Const) and other.value.numpy().size == channels:
                bias = other.value.numpy().reshape(-1).astype(np.float64)
        sites.append(Site(b.var, b.value.args[0], weight.astype(np.float32), bias, conv))
    return sites


def conv_rows(x: np.ndarray, conv: dict, groups: int, kernel: tuple[int, int], rows: int,
              rng: np.random.Generator) -> np.ndarray:
    """``rows`` random im2col rows of a conv's NCHW input: ``[rows, G, C/G · KH · KW]``."""
    (sh, sw), (dh, dw) = conv["strides"], conv["dilation"]
    top, left, bottom, right = conv["padding"]
    n, c, h, w = x.shape
    kh, kw = kernel
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    pick = rng.choice(n * oh * ow, size=min(rows, n * oh * ow), replace=False)
    b, rest = np.divmod(pick, oh * ow)
    r, q = np.divmod(rest, ow)
    hh = r[:, None] * sh + np.arange(kh)[None] * dh             # [m, KH]
    ww = q[:, None] * sw + np.arange(kw)[None] * dw             # [m, KW]
    patches = padded[b[:, None, None, None], np.arange(c)[None, :, None, None], hh[:, None, :, None],
                     ww[:, None, None, :]]                      # [m, C, KH, KW]
    return patches.reshape(len(pick), groups, -1)


class RowSampler:
    """Random input rows of one layer, gathered over the calibration batches."""

    def __init__(self, site: Site, seed: int = 0) -> None:
        self.site = site
        k = site.weight.size // site.weight.shape[site.axis] * site.groups
        self.limit = int(np.clip(ROW_FLOATS // max(k, 1), MIN_ROWS, MAX_ROWS))
        self.per_batch = self.limit
        self.rng = np.random.default_rng(seed)
        self.parts: list[np.ndarray] = []

    def start(self, batches: int) -> None:
        """Spread the rows kept over ``batches`` calibration batches."""
        self.per_batch = -(-self.limit // max(batches, 1))

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32)
        if self.site.conv is None:
            flat = x.reshape(-1, x.shape[-1])
            pick = self.rng.choice(len(flat), size=min(self.per_batch, len(flat)), replace=False)
            self.parts.append(flat[pick][:, None, :])
        else:
            self.parts.append(conv_rows(x, self.site.conv, self.site.groups, self.site.weight.shape[2:],
                                        self.per_batch, self.rng))

    @property
    def rows(self) -> np.ndarray:
        """``[M, G, K]`` float32 rows, shuffled (so that any prefix is a fair split)."""
        rows = np.concatenate(self.parts)
        return rows[np.random.default_rng(1).permutation(len(rows))]


def fake_quant(x: np.ndarray, spec: QuantSpec, lo: float, hi: float) -> np.ndarray:
    """``x`` through ``spec``'s codes for the range ``[lo, hi]``, back in float (as realize does)."""
    scale, zero = (float(a) for a in spec.qparams(np.float64(lo), np.float64(hi)))
    q = spec.quantize(x.astype(np.float64), scale, zero)
    return ((q - zero) * scale).astype(np.float32)


def outputs(rows: np.ndarray, grouped_weight: np.ndarray) -> np.ndarray:
    """The layer's output on ``rows``: ``[M, G, O/G]`` (no bias)."""
    return np.einsum("mgk,gok->mgo", rows, grouped_weight, optimize=True)
