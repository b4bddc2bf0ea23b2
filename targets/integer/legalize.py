"""Relax rewrite: integer conv2d / matmul with constant weights → calls of the packed kernels.

Runs after layout conversion (convs are NHWC) and constant folding, before generic
legalization. Weights are packed here, in numpy, and become new constants: nothing is
re-laid out at run time. Each kernel returns the int32 accumulator; the bias and
requantization ops that follow stay Relax ops, which FuseOps folds into the kernel's
PrimFunc and the schedule runs per register tile (:mod:`.schedule`).

Each layer runs on the ISA the target declares for its activation dtype (:func:`.isa.isa_for`:
``udot`` for uint8 and ``sdot`` for int8 on a Cortex-A76). Activations no declared ISA takes
(int8 codes for ``vpdpbusd``, which takes uint8; uint8 codes on a core with ``sdot`` only) are
shifted by 128 (an elementwise op fused into the producer) and ``shift · Σ w`` is subtracted
per output channel. ISAs with unsigned weight operands (``udot``, ``ummla``) get ``w + 128``
and ``128 · Σ x`` over each output's window is subtracted: a channel sum and a box sum of
the activations in one kernel (:func:`.kernels.window_sum`), or a row sum for a matmul, so the
kernels stay the same.
Which layer kinds are rewritten is the target's declaration (``ops``), not decided here.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from compiler.ir import layer_kind

from . import depthwise_dot
from .isa import SIGNED_SHIFT, DotISA, isa_for, weight_bits_of
from .kernels import ConvShape, conv2d, depthwise_conv2d, matmul, pack_conv_weight, pack_depthwise_weight, \
    pack_matmul_weight, window_sum

OP_PATTERN_OUT_ELEMWISE_FUSABLE = 4  # relax FuseOps: the epilogue may be fused after it


def _const(expr: relax.Expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.Constant) else None


def _shape(expr: relax.Expr) -> tuple[int, ...] | None:
    shape = getattr(expr.ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _to_oihw(weight: np.ndarray, layout: str) -> np.ndarray:
    return weight.transpose([layout.index(axis) for axis in "OIHW"])


def _shift(x: relax.Expr, isa: DotISA) -> tuple[relax.Expr, int]:
    """``x`` in the ISA's activation dtype and the shift added to it (0, +128 or -128)."""
    dtype = str(x.ty.dtype)
    if dtype == isa.act_dtype:
        return x, 0
    shift = SIGNED_SHIFT if dtype == "int8" else -SIGNED_SHIFT
    wide = relax.op.add(relax.op.astype(x, "int32"), relax.const(shift, "int32"))
    return relax.op.astype(wide, isa.act_dtype), shift


def _less(out: relax.Expr, offset: int, sums: relax.Expr) -> relax.Expr:
    """``out - offset · sums``: the correction of a packed weight offset."""
    return relax.op.subtract(out, relax.op.multiply(sums, relax.const(offset, "int32")))


def _operands_fit(data: relax.Expr, weight: relax.Expr, out_dtype: str) -> bool:
    """Whether an integer layer's operands are what the kernels take: 8-bit activations of
    static shape, a constant int8 weight, an int32 result."""
    dtype = str(getattr(data.ty, "dtype", ""))
    w = _const(weight)
    return (out_dtype == "int32" and dtype in ("uint8", "int8") and w is not None and str(w.dtype) == "int8"
            and _shape(data) is not None)


def bound_call(mutator: PyExprMutator, expr: relax.Expr, op: str) -> relax.Call | None:
    """The call of ``op`` that ``expr`` is bound to in the function ``mutator`` visits, if any."""
    value = mutator.lookup_binding(expr) if isinstance(expr, relax.Var) else None
    return value if isinstance(value, relax.Call) and getattr(value.op, "name", "") == op else None


def conv_input(mutator: PyExprMutator, call: relax.Call) -> tuple[relax.Expr, str, tuple[int, ...], int]:
    """The conv's input seen through a transpose to NHWC and a constant spatial pad.

    Returns the tensor the kernel reads, its layout, the padding (top, left, bottom,
    right) and the padding value: the kernel's own padding stage does both.
    """
    data, layout = call.args[0], str(call.attrs.data_layout)
    padding = tuple(int(p) for p in call.attrs.padding)
    transpose = bound_call(mutator, data, "relax.permute_dims")
    if layout == "NHWC" and transpose is not None and [int(a) for a in transpose.attrs.axes] == [0, 2, 3, 1]:
        data, layout = transpose.args[0], "NCHW"
    pad = bound_call(mutator, data, "relax.nn.pad")
    if pad is None or any(padding) or str(pad.attrs.pad_mode) != "constant":
        return data, layout, padding, 0
    widths = [int(w) for w in pad.attrs.pad_width]
    (top, bottom), (left, right) = (widths[2 * layout.index(a):2 * layout.index(a) + 2] for a in "HW")
    if any(widths[2 * layout.index(a):2 * layout.index(a) + 2] != [0, 0] for a in "NC"):
        return data, layout, padding, 0
    return pad.args[0], layout, (top, left, bottom, right), int(float(pad.attrs.pad_value))


def conv_layer(mutator: PyExprMutator, call: relax.Call):
    """``(data, layout, pad_value, OIHW weight, ConvShape)`` of an integer conv with a constant
    weight (its input seen through :func:`conv_input`), or None for another data / output layout.
    Shared by the targets that rewrite integer convs (int8 CPU kernels, VTA)."""
    attrs = call.attrs
    if str(attrs.data_layout) not in ("NHWC", "NCHW") or str(attrs.out_layout) != str(attrs.data_layout):
        return None
    data, layout, padding, pad_value = conv_input(mutator, call)
    weight = _to_oihw(_const(call.args[1]), str(attrs.kernel_layout))
    dims = dict(zip(layout, _shape(data)))
    shape = ConvShape(dims["N"], dims["H"], dims["W"], dims["C"], weight.shape[0], weight.shape[2],
                      weight.shape[3], tuple(int(s) for s in attrs.strides), padding,
                      tuple(int(d) for d in attrs.dilation), int(attrs.groups))
    return data, layout, pad_value, weight, shape


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, isa: DotISA, native: tuple[DotISA, ...], ops: frozenset[str]):
        super().__init__(mod)
        self.isa, self.native, self.ops = isa, native, ops

    def _isa(self, data: relax.Expr, weight: np.ndarray) -> DotISA:
        return isa_for(str(data.ty.dtype), self.isa, self.native, weight_bits_of(weight))

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = self.visit_expr_post_order(call)
        kind = layer_kind(call)
        if kind not in self.ops or not _operands_fit(*call.args, str(call.attrs.out_dtype)):
            return call
        if kind != "matmul":
            return self._conv2d(call)
        if _const(call.args[1]).ndim == 2 and len(_shape(call.args[0])) >= 2:
            return self._matmul(call)
        return call

    def _kernel(self, func: tvm.tirx.PrimFunc, name: str, args: list, shape: tuple[int, ...]) -> relax.Expr:
        func = func.without_attr("global_symbol").with_attr("op_pattern", OP_PATTERN_OUT_ELEMWISE_FUSABLE)
        gvar = self.builder_.add_func(func, name)
        return relax.call_tir(gvar, args, relax.TensorType(shape, "int32"))

    def _conv_layer(self, call: relax.Call):
        return conv_layer(self, call)

    def _window_sum(self, data: relax.Expr, layout: str, shape: ConvShape, pad_value: int) -> relax.Expr:
        """:func:`.kernels.window_sum` of the conv's input: int32 ``[N, OH, OW, 1 or OC]``."""
        out = (shape.batch, shape.out_height, shape.out_width, 1 if shape.groups == 1 else shape.out_channels)
        return self._kernel(window_sum(shape, layout, str(data.ty.dtype), pad_value), "window_sum", [data], out)

    def _conv2d(self, call: relax.Call) -> relax.Expr:
        layer = self._conv_layer(call)
        if layer is None:
            return call
        data, layout, pad_value, weight, shape = layer
        # Depthwise kernels store int8 weights whatever bits they need (no sub-byte variant).
        isa = isa_for(str(data.ty.dtype), self.isa, self.native) if shape.depthwise else self._isa(data, weight)
        data, shift = _shift(data, isa)
        pad_value += shift
        if depthwise_dot.applies(shape, isa):
            func, packed = depthwise_dot.depthwise_dot(shape, isa, pad_value, layout), \
                depthwise_dot.pack_depthwise_dot_weight(weight, shape)
            name = f"int8_depthwise_conv2d_{isa.name}"
        elif shape.depthwise:
            func, packed = depthwise_conv2d(shape, isa, pad_value, layout), pack_depthwise_weight(weight, shape)
            name = "int8_depthwise_conv2d"
        else:
            func = conv2d(shape, isa, pad_value, layout)
            packed, name = pack_conv_weight(weight, shape, isa, layout), f"int8_conv2d_{isa.name}"
        out = self._kernel(func, name, [data, relax.const(packed)],
                           (shape.batch, shape.out_height, shape.out_width, shape.out_channels))
        if isa.weight_offset and not shape.depthwise:
            out = _less(out, isa.weight_offset, self._window_sum(data, layout, shape, pad_value))
        if shift:
            sums = weight.astype(np.int64).sum(axis=(1, 2, 3)) * shift
            out = relax.op.subtract(out, relax.const(sums.astype(np.int32)))
        return relax.op.permute_dims(out, [0, 3, 1, 2]) if str(call.attrs.data_layout) == "NCHW" else out

    def _matmul(self, call: relax.Call) -> relax.Expr:
        data = call.args[0]
        weight = _const(call.args[1])
        *batch, rows, k = _shape(data)
        n = weight.shape[1]
        isa = self._isa(data, weight)
        data, shift = _shift(data, isa)
        func = matmul(tuple(batch), rows, k, n, isa)
        out = self._kernel(func, f"int8_matmul_{isa.name}",
                           [data, relax.const(pack_matmul_weight(weight, isa))], (*batch, rows, n))
        if isa.weight_offset:
            out = _less(out, isa.weight_offset, relax.op.sum(relax.op.astype(data, "int32"), [-1], keepdims=True))
        if shift:
            sums = weight.astype(np.int64).sum(axis=0) * shift
            out = relax.op.subtract(out, relax.const(sums.astype(np.int32)))
        return out


def int8_kernels(isa: DotISA, ops: frozenset[str], native: tuple[DotISA, ...] = ()) -> tvm.transform.Pass:
    """Module pass replacing the integer layers of kinds ``ops`` (``compiler.ir.layer_kind``)
    that have constant weights by calls of the packed kernels for ``isa``, or for the ISA of
    ``native`` that takes their activation dtype (:func:`.isa.isa_for`)."""

    @tvm.transform.module_pass(opt_level=0, name="squeeze.int8_kernels")
    def transform(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Rewriter(mod, isa, native, ops)
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return transform
