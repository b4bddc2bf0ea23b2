"""im2col of a conv2d at sampled output positions, shared by the ThiNet Grams and the re-fit."""
from __future__ import annotations

import numpy as np

from .depgraph import Layer


def patches(x: np.ndarray, layer: Layer, pos: np.ndarray) -> np.ndarray:
    """im2col rows of an NCHW conv2d at flat output positions ``pos`` (n, oh, ow)."""
    attrs, (kh, kw) = layer.call.attrs, [int(d) for d in layer.call.args[1].ty.shape][2:]
    (sh, sw), (dh, dw) = [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation]
    top, left, bottom, right = [int(p) for p in attrs.padding]
    _, _, oh_n, ow_n = [int(d) for d in layer.var.ty.shape]
    n, rest = np.divmod(pos, oh_n * ow_n)
    oh, ow = np.divmod(rest, ow_n)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    hh = oh[:, None] * sh + np.arange(int(kh)) * dh
    ww = ow[:, None] * sw + np.arange(int(kw)) * dw
    ch = np.arange(x.shape[1])
    out = xp[n[:, None, None, None], ch[None, :, None, None], hh[:, None, :, None], ww[:, None, None, :]]
    return out.reshape(len(pos), -1)
