"""Relax rewrite: integer conv2d / matmul with constant weights → calls of the CUDA kernels.

The layer matching (NHWC / NCHW input, a constant pad folded in, int8 operands, int32 result),
the signedness shift of uint8 activations and the ``call_tir`` wiring are the shared integer
legalization's (:mod:`targets.integer.legalize`); only the kernels and their packing differ:
regular convs and matmuls become tensor-core GEMMs (:func:`.kernels.conv2d`, whose input is
padded here, once, so its shared-memory copies need no predicate), grouped and depthwise convs
the CUDA-core :func:`.kernels.direct_conv2d`. The bias, requantize, activation and residual ops
after each call stay Relax ops, which FuseOps folds into the kernel's epilogue.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from ..integer.isa import DotISA
from ..integer.legalize import _Rewriter, _const, _shape, _shift
from . import kernels

# The activation and weight dtypes of mma.sync.m16n8k32.s8 (what _shift maps uint8 codes to).
MMA_S8 = DotISA(name="mma_s8", lanes=8, group=32, act_dtype="int8", weight_dtype="int8",
                intrin="mma_i8i8i32_trans_b", registers=255, vector_bytes=16,
                instruction="mma.sync.m16n8k32.s8")


@mutator
class _CudaRewriter(_Rewriter._cls):  # the class @mutator wrapped: its methods are overridable
    """The shared integer rewriter with the CUDA kernels."""

    def _conv2d(self, call: relax.Call) -> relax.Expr:
        layer = self._conv_layer(call)
        if layer is None:
            return call
        data, layout, pad_value, weight, shape = layer
        data, shift = _shift(data, self.isa)
        pad_value += shift
        if layout == "NCHW":
            data = relax.op.permute_dims(data, [0, 2, 3, 1])
        if shape.groups > 1:
            func = kernels.direct_conv2d(shape, pad_value)
            packed, name = kernels.pack_direct_weight(weight), "int8_direct_conv2d"
        else:
            top, left, bottom, right = shape.padding
            if any(shape.padding):
                data = relax.op.nn.pad(data, (0, 0, top, bottom, left, right, 0, 0), pad_value=float(pad_value))
            shape = dataclasses.replace(shape, height=shape.height + top + bottom, width=shape.width + left + right,
                                        padding=(0, 0, 0, 0))
            tile = kernels.pick_tile(*kernels.gemm_shape(shape))
            func, packed = kernels.conv2d(shape, tile), kernels.pack_conv_weight(weight, shape, tile)
            name = "int8_igemm_conv2d"
        out = self._kernel(func, name, [data, relax.const(packed)],
                           (shape.batch, shape.out_height, shape.out_width, shape.out_channels))
        if shift:
            sums = weight.astype(np.int64).sum(axis=(1, 2, 3)) * shift
            out = relax.op.subtract(out, relax.const(sums.astype(np.int32)))
        return relax.op.permute_dims(out, [0, 3, 1, 2]) if str(call.attrs.data_layout) == "NCHW" else out

    def _matmul(self, call: relax.Call) -> relax.Expr:
        data, weight = call.args[0], _const(call.args[1])
        *batch, rows, k = _shape(data)
        n = weight.shape[1]
        data, shift = _shift(data, self.isa)
        tile = kernels.pick_tile(int(np.prod(batch, dtype=np.int64)) * rows, n, k)
        func = kernels.matmul(tuple(batch), rows, k, n, tile)
        out = self._kernel(func, "int8_gemm", [data, relax.const(kernels.pack_matmul_weight(weight, tile))],
                           (*batch, rows, n))
        if shift:
            sums = weight.astype(np.int64).sum(axis=0) * shift
            out = relax.op.subtract(out, relax.const(sums.astype(np.int32)))
        return out


def cuda_kernels(ops: frozenset[str]) -> tvm.transform.Pass:
    """Module pass replacing the integer layers of kinds ``ops`` that have constant weights by
    calls of the CUDA kernels."""

    @tvm.transform.module_pass(opt_level=0, name="squeeze.cuda_kernels")
    def transform(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _CudaRewriter(mod, MMA_S8, (), ops)
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return transform
