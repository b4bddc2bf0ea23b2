"""Softmax over an inner axis, computed over the last one between two transposes."""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard


def softmax_over_last_axis() -> tvm.transform.Pass:
    """Rewrite ``softmax(x, axis)`` and ``log_softmax(x, axis)`` over a non-last axis as the same
    op over the last axis of ``permute_dims(x)``, permuted back.

    The row-reduction schedule (:mod:`.reduction`) vectorizes and parallelizes reductions over
    contiguous rows. A softmax over axis 1 of ``[1, 16, 4, 2100]`` (YOLOv8's DFL head) reduces
    16 values 8,400 elements apart instead, at 0.5 GOP/s; two transposes of the tensor cost
    less than that.

    Returns
    -------
    tvm.transform.Pass
        A function pass on every Relax function of the module.
    """
    x = wildcard()
    softmax, log_softmax = is_op("relax.nn.softmax")(x), is_op("relax.nn.log_softmax")(x)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        call = matches[softmax] if softmax in matches else matches[log_softmax]
        ndim = call.ty.ndim
        axis = int(call.attrs.axis) % ndim
        if axis == ndim - 1:
            return expr
        order = [a for a in range(ndim) if a != axis] + [axis]
        back = [order.index(a) for a in range(ndim)]
        op = relax.op.nn.softmax if softmax in matches else relax.op.nn.log_softmax
        return relax.op.permute_dims(op(relax.op.permute_dims(matches[x], order), axis=-1), back)

    @relax.transform.function_pass(opt_level=0, name="squeeze.softmax_over_last_axis")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        return rewrite_call(softmax | log_softmax, rewriter, func)

    return transform
