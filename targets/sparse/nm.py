"""N:M-sparse dense layers (e.g. 2:4): a TIR kernel and the Relax pass that uses it.

A weight ``W[K, N]`` with at most ``n`` non-zeros in every ``m`` consecutive rows of each
column is stored as its kept values and their positions inside the group (one byte each),
packed by 16-column blocks so that a thread streams its block's weights contiguously.

The kernel vectorizes over 16 output columns. Each column of a group reads a different row
of ``x``: a chain of ``m - 1`` vector selects on the positions picks it from the group's ``m``
broadcast inputs, then one multiply-add per kept value. It reads ``n/m`` of the weights plus a
byte per kept value, so it wins where a dense layer is bound by reading its weights, i.e. on
one or two rows (batch-1 inference): 1024×1024 at 2:4 on an AVX-512 Xeon took 21 µs against
35 µs dense for one row, 32 against 37 for two, and lost from four rows on, where the dense
layer is bound by multiply-adds and the selects cost more than the skipped ones. Without
AVX-512 (16 lanes in two AVX2 registers) it was slower than dense throughout, so targets opt in
(``TargetSpec.sparse``).
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from passes.registry import register_pass
from .rewrite import Lowering, emit_kernel, row_tile, sparse_pass

NM_SPARSE = "nm_sparse"
LANES = 16  # output columns per vector (one AVX-512 register of float32)


def is_nm(kn: np.ndarray, n: int, m: int) -> bool:
    """Whether every ``m`` consecutive rows of each column of ``kn`` hold at most ``n`` non-zeros."""
    k, cols = kn.shape
    return k % m == 0 and bool(((kn != 0).reshape(k // m, m, cols).sum(axis=1) <= n).all())


def to_nm(kn: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``(values, positions)``, each ``[N/16, K/m, n, 16]``: the kept values of every group of
    ``m`` rows and their row inside the group (uint8), by 16-column blocks."""
    k, cols = kn.shape
    groups = kn.reshape(k // m, m, cols)
    positions = np.sort(np.argsort(groups == 0, axis=1, kind="stable")[:, :n], axis=1)
    values = np.take_along_axis(groups, positions, axis=1)

    def by_column_block(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.reshape(k // m, n, cols // LANES, LANES).transpose(2, 0, 1, 3))

    return by_column_block(values.astype(np.float32)), by_column_block(positions.astype(np.uint8))


def nm_matmul(rows: int, k: int, cols: int, n: int, m: int) -> tvm.tirx.PrimFunc:
    """``y[rows, cols] = x[rows, k] @ W`` with ``W`` in the form of :func:`to_nm`.

    Column blocks run in parallel; up to 8 rows share each loaded weight vector, and with
    fewer rows several groups accumulate into separate registers to hide the multiply-add
    latency.
    """
    groups, blocks = k // m, cols // LANES
    mt = row_tile(rows)
    unroll = max(d for d in range(1, max(1, 8 // mt) + 1) if groups % d == 0)

    @T.prim_func(s_tir=True)
    def kernel(x: T.Buffer((rows, k), "float32"), values: T.Buffer((blocks, groups, n, LANES), "float32"),
               positions: T.Buffer((blocks, groups, n, LANES), "uint8"), y: T.Buffer((rows, cols), "float32")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
        for j in T.parallel(blocks):
            with T.sblock("nm_column_block"):
                vj = T.axis.spatial(blocks, j)
                T.reads(x[0:rows, 0:k], values[vj, 0:groups, 0:n, 0:LANES], positions[vj, 0:groups, 0:n, 0:LANES])
                T.writes(y[0:rows, vj * LANES:vj * LANES + LANES])
                acc = T.alloc_buffer((mt, unroll, LANES), "float32", scope="local")
                picked = T.alloc_buffer((LANES,), "float32", scope="local")
                for i0 in range(rows // mt):
                    for ii, u in T.grid(mt, unroll):
                        for c in T.vectorized(LANES):
                            acc[ii, u, c] = T.float32(0)
                    for g0 in range(groups // unroll):
                        for u in T.unroll(unroll):
                            for s in T.unroll(n):
                                for ii in T.unroll(mt):
                                    for c in T.vectorized(LANES):
                                        picked[c] = x[i0 * mt + ii, (g0 * unroll + u) * m + m - 1]
                                    for r in T.unroll(m - 1):
                                        for c in T.vectorized(LANES):
                                            picked[c] = T.Select(positions[vj, g0 * unroll + u, s, c] == T.uint8(r),
                                                                 x[i0 * mt + ii, (g0 * unroll + u) * m + r], picked[c])
                                    for c in T.vectorized(LANES):
                                        acc[ii, u, c] = acc[ii, u, c] + values[vj, g0 * unroll + u, s, c] * picked[c]
                    for ii in T.unroll(mt):
                        for c in T.vectorized(LANES):
                            y[i0 * mt + ii, vj * LANES + c] = acc[ii, 0, c]
                        for u in range(1, unroll):
                            for c in T.vectorized(LANES):
                                y[i0 * mt + ii, vj * LANES + c] = y[i0 * mt + ii, vj * LANES + c] + acc[ii, u, c]

    return kernel


def _nm_lowering(n: int, m: int, max_rows: int) -> Lowering:
    def lower(builder: relax.BlockBuilder, x: relax.Expr, kn: np.ndarray, rows: int) -> relax.Expr | None:
        k, cols = kn.shape
        if rows > max_rows or cols % LANES or not is_nm(kn, n, m):
            return None
        values, positions = to_nm(kn, n, m)
        return emit_kernel(builder, nm_matmul(rows, k, cols, n, m), "nm_matmul", f"nm {n}:{m}", rows * values.size,
                           [x, relax.const(values), relax.const(positions)],
                           [relax.TensorType((rows, cols), "float32")])

    return lower


@register_pass(NM_SPARSE)
def nm_sparse(nm: tuple[int, int] = (2, 4), max_rows: int = 2) -> tvm.transform.Pass:
    """Run dense layers and 1×1 convs whose constant weight is N:M sparse with the N:M kernel.

    Parameters
    ----------
    nm : (int, int)
        At most ``n`` non-zeros in every ``m`` consecutive input rows of each output column
        (``m`` at most 16).
    max_rows : int
        Only layers computing at most this many rows (batch × positions) are converted: beyond
        two rows the dense kernel was faster (see the module docstring).

    Returns
    -------
    tvm.transform.Pass
        A module pass; converted kernels carry the ``squeeze.sparse`` attribute.
    """
    n, m = (int(v) for v in nm)
    if not 0 < n <= m <= 16:
        raise ValueError(f"N:M must have 0 < N <= M <= 16, got {n}:{m}")
    return sparse_pass(NM_SPARSE, _nm_lowering(n, m, max_rows))
