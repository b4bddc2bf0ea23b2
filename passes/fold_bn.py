"""Fold inference BatchNorm into the preceding Conv2d or Gemm/MatMul."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, rewrite_call, wildcard

from .registry import register_pass


def _bn_scale_shift(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _const(arr: np.ndarray) -> tvm.ir.expr.Constant:
    return relax.const(np.ascontiguousarray(arr, dtype="float32"))


def _producer_channel_axes(call: relax.Call) -> tuple[int, int] | None:
    """(output channel axis, weight channel axis) of a conv2d/matmul, or None if unsupported."""
    name = call.op.name
    if name == "relax.nn.conv2d" and call.attrs.data_layout == "NCHW" and call.attrs.kernel_layout == "OIHW":
        return 1, 0
    if name == "relax.matmul" and len(call.args[1].ty.shape) == 2:
        return -1, 1
    return None


def _fold(call: relax.Call, bias: tvm.ir.expr.Constant | None, bn: relax.Call) -> relax.Expr | None:
    axes = _producer_channel_axes(call)
    out_ndim = len(call.ty.shape)
    if axes is None or int(bn.attrs.axis) % out_ndim != axes[0] % out_ndim:
        return None
    gamma, beta, mean, var = (a.value.numpy() for a in bn.args[1:])
    scale, shift = _bn_scale_shift(gamma, beta, mean, var, float(bn.attrs.epsilon))
    weight = call.args[1].value.numpy()
    w_shape = [1] * weight.ndim
    w_shape[axes[1]] = -1
    new_call = relax.Call(call.op, [call.args[0], _const(weight * scale.reshape(w_shape))], call.attrs)
    if bias is not None:
        shift = shift + bias.value.numpy().reshape(-1) * scale
    b_shape = [1] * out_ndim
    b_shape[axes[0]] = -1
    return relax.op.add(new_call, _const(shift.reshape(b_shape)))


@register_pass("fold_bn")
def fold_bn() -> tvm.transform.Pass:
    """Fold ``batch_norm`` (inference) into a preceding conv2d or matmul with constant weights.

    ``y = BN(conv(x, W) [+ b])`` becomes ``conv(x, W * s) + (b * s + beta - mean * s)``
    with ``s = gamma / sqrt(var + eps)``. BNs after anything else are left for
    ``DecomposeOpsForInference`` to lower.

    Returns
    -------
    tvm.transform.Pass
        A function pass over Relax functions (weights bound as constants).
    """
    x, weight, bias = wildcard(), is_const(), is_const()
    producer = is_op("relax.nn.conv2d")(x, weight) | is_op("relax.matmul")(x, weight)
    with_bias = producer | is_op("relax.add")(producer, bias)
    bn = is_op("relax.nn.batch_norm")(with_bias, is_const(), is_const(), is_const(), is_const())
    pattern = is_tuple_get_item(bn, 0)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        folded = _fold(matches[producer], matches.get(bias), matches[bn])
        return expr if folded is None else folded

    @relax.transform.function_pass(opt_level=0, name="fold_bn")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        return rewrite_call(pattern, rewriter, func)

    return tvm.transform.Sequential([relax.transform.DeadCodeElimination(["main"]), transform])
