"""Pad float matmul weights to whole vector registers of columns."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from .common import vector_isa


def padded_columns(cols: int, lanes: int) -> int:
    """``cols`` rounded up to whole vectors: four at a time for wide outputs (more tile shapes
    divide it), one at a time for narrow ones (less padding)."""
    quantum = 4 * lanes if cols >= 16 * lanes else lanes
    return -(-cols // quantum) * quantum


def pad_matmul_columns(target: tvm.target.Target) -> tvm.transform.Pass:
    """Pad the columns of each float32 ``matmul(x, W)`` with a constant ``W[K, N]`` to whole
    vectors and slice the output back to ``N``.

    The register-tiled GEMM (:mod:`.matmul`) vectorizes along ``N``: when no vector width
    divides it (a vocabulary of 8,210 or 6,625 classes) the tile falls back to one predicated
    vector and unpacked weights, 6-8x below the packed kernel. Zero columns change no
    output; the weight grows by under a vector per row in 64 columns.

    Parameters
    ----------
    target : tvm.target.Target
        Its vector width (:func:`.common.vector_isa`) sets the column multiple.

    Returns
    -------
    tvm.transform.Pass
        A function pass on every Relax function of the module.
    """
    lanes = vector_isa(target).lanes("float32")
    x, weight = wildcard(), is_const()
    pattern = is_op("relax.matmul")(x, weight)

    def rewriter(expr: relax.Call, matches: dict) -> relax.Expr:
        w = matches[weight].value.numpy()
        if w.ndim != 2 or w.dtype != np.float32 or expr.ty.dtype != "float32":
            return expr
        cols = w.shape[1]
        padded = padded_columns(cols, lanes)
        if cols <= lanes or padded == cols:
            return expr
        wide = relax.const(np.pad(w, ((0, 0), (0, padded - cols))))
        out = relax.op.matmul(matches[x], wide, out_dtype="float32")
        return relax.op.strided_slice(out, axes=[-1], begin=[0], end=[cols])

    @relax.transform.function_pass(opt_level=0, name="squeeze.pad_matmul_columns")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        return rewrite_call(pattern, rewriter, func)

    return transform
