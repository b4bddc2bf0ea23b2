"""The Relax side of sparse kernels: dense layers whose constant weight has a sparsity pattern
become ``call_tir`` of a sparse kernel.

A *lowering* decides per layer: given the builder, the layer input as a ``[rows, K]`` matrix
and the weight as ``[K, N]``, it returns the ``[rows, N]`` result computed by its kernel, or
None to leave the layer dense. :func:`sparse_pass` applies one to every matmul and pointwise
conv (seen as ``(N·H·W, C) @ W[C, O]``) with a constant float32 weight. :func:`row_tile` is the
row blocking the BSR and N:M kernels share.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

Lowering = Callable[[relax.BlockBuilder, relax.Expr, np.ndarray, int], "relax.Expr | None"]


SPARSE_ATTR = "squeeze.sparse"  # PrimFunc attribute: the kernel's pattern, e.g. "bsr 4x4", "nm 2:4"
MACS_ATTR = "squeeze.macs"  # PrimFunc attribute: multiply-accumulates it does (stored weights only)


def row_tile(rows: int) -> int:
    """Rows a sparse kernel handles together (sharing each loaded weight vector): the largest
    divisor of ``rows`` up to 8."""
    return max(d for d in range(1, 9) if rows % d == 0)


def emit_kernel(builder: relax.BlockBuilder, kernel: tvm.tirx.PrimFunc, name: str, label: str, macs: int,
                args: list, outputs: list[relax.TensorType]) -> relax.Expr:
    """Add ``kernel`` (tagged with its pattern ``label`` and ``macs``) and call it; returns its
    last output (earlier outputs are scratch buffers the kernel fills and the caller discards)."""
    kernel = kernel.without_attr("global_symbol").with_attr(SPARSE_ATTR, label).with_attr(MACS_ATTR, int(macs))
    gv = builder.add_func(kernel, name)
    call = builder.emit(relax.call_tir(gv, args, outputs if len(outputs) > 1 else outputs[0]))
    return builder.emit(relax.TupleGetItem(call, len(outputs) - 1)) if len(outputs) > 1 else call


@mutator
class _SparseRewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lower: Lowering) -> None:
        super().__init__(mod)
        self.lower = lower

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM visitor name)
        call = super().visit_call_(call)
        op = getattr(call.op, "name", "")
        if not isinstance(call.args[-1] if call.args else None, tvm.ir.expr.Constant):
            return call
        if op == "relax.matmul":
            y = self._matmul(call.args[0], call.args[1].value.numpy())
            return call if y is None else y
        if op == "relax.nn.conv2d" and _pointwise(call):
            return self._conv1x1(call)
        return call

    def _matmul(self, x: relax.Expr, kn: np.ndarray) -> relax.Expr | None:
        """``x[..., K] @ kn`` through the lowering's kernel, or None."""
        if kn.ndim != 2 or kn.dtype != np.float32 or str(x.ty.dtype) != "float32":
            return None
        shape = [int(d) for d in x.ty.shape]
        rows, (k, n) = int(np.prod(shape[:-1])), kn.shape
        x2 = self.builder_.emit(relax.op.reshape(x, (rows, k))) if len(shape) != 2 else x
        y = self.lower(self.builder_, x2, kn, rows)
        if y is None or len(shape) == 2:
            return y
        return relax.op.reshape(y, (*shape[:-1], n))

    def _conv1x1(self, call: relax.Call) -> relax.Expr:
        """A pointwise NCHW conv as ``(N·H·W, C) @ W[C, O]`` (strided convs subsample first)."""
        x, w = call.args[0], call.args[1].value.numpy()
        sh, sw = (int(s) for s in call.attrs.strides)
        if (sh, sw) != (1, 1):
            _, _, h, wd = (int(d) for d in x.ty.shape)
            x = self.builder_.emit(relax.op.strided_slice(x, axes=[2, 3], begin=[0, 0], end=[h, wd],
                                                          strides=[sh, sw]))
        nhwc = self.builder_.emit(relax.op.permute_dims(x, [0, 2, 3, 1]))
        y = self._matmul(nhwc, np.ascontiguousarray(w[:, :, 0, 0].T))
        return call if y is None else relax.op.permute_dims(self.builder_.emit(y), [0, 3, 1, 2])


def _pointwise(call: relax.Call) -> bool:
    """An ungrouped, unpadded, undilated 1×1 NCHW/OIHW conv2d."""
    a = call.attrs
    w = [int(d) for d in call.args[1].ty.shape]
    return (w[2:] == [1, 1] and int(a.groups) == 1 and str(a.data_layout) == "NCHW" and str(a.kernel_layout) == "OIHW"
            and all(int(p) == 0 for p in a.padding) and all(int(d) == 1 for d in a.dilation)
            and str(a.out_layout or "NCHW") == "NCHW" and a.out_dtype in ("", "float32", None))


def sparse_pass(name: str, lower: Lowering) -> tvm.transform.Pass:
    """A module pass running ``lower`` on every dense layer with a constant weight."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    def transform(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _SparseRewriter(mod, lower)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return transform
