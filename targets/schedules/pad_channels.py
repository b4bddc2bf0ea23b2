"""Pad float weights' output channels (matmul columns, conv output channels) to whole vectors."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from .common import vector_isa


def padded_channels(channels: int, lanes: int) -> int:
    """``channels`` rounded up to whole vectors: four at a time for wide outputs (more tile
    shapes divide it), one at a time for narrow ones (less padding)."""
    quantum = 4 * lanes if channels >= 16 * lanes else lanes
    return -(-channels // quantum) * quantum


def pad_output_channels(target: tvm.target.Target) -> tvm.transform.Pass:
    """Pad the output channels of each float32 ``matmul(x, W)`` (``W[K, N]`` a constant) and
    ungrouped ``conv2d(x, W)`` (a constant ``W``) to whole vectors with zero weights, and slice
    the output back.

    The register-tiled GEMM and conv (:mod:`.matmul`, :mod:`.conv2d`) vectorize along the
    output channels: when no vector width divides them (a vocabulary of 8,210 classes, a
    detection head of 18) the tile falls back to one predicated vector and unpacked weights,
    which LLVM leaves scalar: 6-40x below the packed kernel. Zero channels change no output.

    Parameters
    ----------
    target : tvm.target.Target
        Its vector width (:func:`.common.vector_isa`) sets the channel multiple.

    Returns
    -------
    tvm.transform.Pass
        A function pass on every Relax function of the module.
    """
    lanes = vector_isa(target).lanes("float32")
    x, weight = wildcard(), is_const()
    matmul = is_op("relax.matmul")(x, weight)
    conv = is_op("relax.nn.conv2d")(x, weight)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        call = matches[matmul] if matmul in matches else matches[conv]
        w = matches[weight].value.numpy()
        if w.dtype != np.float32 or call.ty.dtype != "float32":
            return expr
        if matmul in matches:
            if w.ndim != 2:
                return expr
            w_axis, out_axis = 1, call.ty.ndim - 1
        else:
            if int(call.attrs.groups) != 1:
                return expr
            w_axis, out_axis = str(call.attrs.kernel_layout).index("O"), str(call.attrs.out_layout).index("C")
        channels = w.shape[w_axis]
        padded = padded_channels(channels, lanes)
        if channels <= lanes or padded == channels:
            return expr
        widths = [(0, 0)] * w.ndim
        widths[w_axis] = (0, padded - channels)
        wide = relax.const(np.pad(w, widths))
        if matmul in matches:
            out = relax.op.matmul(matches[x], wide, out_dtype="float32")
        else:
            a = call.attrs
            out = relax.op.nn.conv2d(matches[x], wide, a.strides, a.padding, a.dilation, 1, str(a.data_layout),
                                     str(a.kernel_layout), str(a.out_layout), "float32")
        return relax.op.strided_slice(out, axes=[out_axis], begin=[0], end=[channels])

    @relax.transform.function_pass(opt_level=0, name="squeeze.pad_output_channels")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        return rewrite_call(matmul | conv, rewriter, func)

    return transform
