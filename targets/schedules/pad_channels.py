"""Pad matmul columns and rows and conv output channels that no vector or register tile divides."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from .common import predicated_columns, vector_isa


def padded_channels(channels: int, lanes: int) -> int:
    """``channels`` rounded up to whole vectors: four at a time for wide outputs (more tile
    shapes divide it), one at a time for narrow ones (less padding)."""
    quantum = 4 * lanes if channels >= 16 * lanes else lanes
    return -(-channels // quantum) * quantum


def pad_output_channels(target: tvm.target.Target) -> tvm.transform.Pass:
    """Pad the output channels of each float32 or int32 ``matmul(x, B)`` and float32 ungrouped
    ``conv2d(x, W)`` (a constant ``W``) to whole vectors with zeros, and slice the output back.

    The register-tiled GEMM and conv (:mod:`.matmul`, :mod:`.conv2d`) vectorize along the
    output channels: when no vector width divides them (a vocabulary of 8,210 classes, a
    detection head of 18, attention over 257 tokens) the tile falls back to one predicated vector
    and unpacked operands, which LLVM leaves scalar: 6-40x below the packed kernel
    (:func:`.common.predicated_columns`). Counts such as 24 or 1000 run on 8-lane vectors and are
    left: padding them measured slower. Zero channels change no output.

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
    x, weight, operand = wildcard(), is_const(), wildcard()
    matmul = is_op("relax.matmul")(x, operand)
    conv = is_op("relax.nn.conv2d")(x, weight)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        if matmul in matches:
            return _pad_matmul(expr, matches[matmul], lanes)
        call = matches[conv]
        w = matches[weight].value.numpy()
        if w.dtype != np.float32 or call.ty.dtype != "float32" or int(call.attrs.groups) != 1:
            return expr
        a = call.attrs
        w_axis, out_axis = str(a.kernel_layout).index("O"), str(a.out_layout).index("C")
        channels = w.shape[w_axis]
        if not predicated_columns(channels, lanes):
            return expr
        padded = padded_channels(channels, lanes)
        widths = [(0, 0)] * w.ndim
        widths[w_axis] = (0, padded - channels)
        wide = relax.op.nn.conv2d(call.args[0], relax.const(np.pad(w, widths)), a.strides, a.padding, a.dilation,
                                  1, str(a.data_layout), str(a.kernel_layout), str(a.out_layout), "float32")
        return relax.op.strided_slice(wide, axes=[out_axis], begin=[0], end=[channels])

    @relax.transform.function_pass(opt_level=0, name="squeeze.pad_output_channels")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        return rewrite_call(matmul | conv, rewriter, func)

    return transform


def _static_dims(expr: relax.Expr) -> list[int] | None:
    """The shape of ``expr`` as ints (None when unknown or symbolic)."""
    shape = getattr(expr.ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    return [int(d) for d in shape]


def _pad_matmul(expr: relax.Expr, call: relax.Call, lanes: int) -> relax.Expr:
    """``matmul(x, B)`` with ``B``'s columns padded (a constant ``B[K, N]`` with zeros at compile
    time, an activation such as attention's ``K^T`` by a zero ``pad``) and, when no register-tile
    height divides them (257 tokens of a ViT), ``x``'s rows padded to a multiple of 8. Integer
    matmuls the target's kernels left (int8 attention, accumulating in int32) too: the padding
    only adds output rows and columns that the slice drops, whatever the zero points."""
    x, b = call.args
    x_shape, b_shape = _static_dims(x), _static_dims(b)
    if call.ty.dtype not in ("float32", "int32") or x_shape is None or b_shape is None \
            or len(x_shape) < 2 or len(b_shape) < 2:
        return expr
    constant = isinstance(b, tvm.ir.expr.Constant)
    cols, rows = b_shape[-1], x_shape[-2]
    pad_cols = predicated_columns(cols, lanes) and (not constant or len(b_shape) == 2)
    wide_cols = padded_channels(cols, lanes) if pad_cols else cols
    tall_rows = rows if rows <= 8 or any(rows % d == 0 for d in range(4, 9)) else -(-rows // 8) * 8
    if (wide_cols, tall_rows) == (cols, rows):
        return expr
    if wide_cols != cols:
        b = (relax.const(np.pad(b.value.numpy(), ((0, 0), (0, wide_cols - cols)))) if constant
             else relax.op.nn.pad(b, [0] * (2 * len(b_shape) - 1) + [wide_cols - cols]))
    if tall_rows != rows:
        x = relax.op.nn.pad(x, [0] * (2 * len(x_shape) - 3) + [tall_rows - rows, 0, 0])
    out = relax.op.matmul(x, b, out_dtype=str(call.ty.dtype))
    ndim = call.ty.ndim
    return relax.op.strided_slice(out, axes=[ndim - 2, ndim - 1], begin=[0, 0], end=[rows, cols])
