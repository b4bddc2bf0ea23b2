"""Sigmoid through the vectorized fast exponential."""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard


def sigmoid_as_exp() -> tvm.transform.Pass:
    """Rewrite float ``sigmoid(x)`` as ``1 / (1 + exp(-x))`` so that ``FastMathTransform`` (run
    after the targets' legalization, :func:`compiler.build.graph_lowering`) makes the exponential
    TVM's vectorized ``fast_exp``.

    TVM lowers ``tir.sigmoid`` on LLVM to ``llvm.exp``, which LLVM expands into one scalar
    ``expf`` call per lane: every SiLU epilogue of a YOLO or EfficientNet conv ran scalar.
    ``fast_exp`` clamps its input to [-88.38, 88.38], where ``exp`` stays finite, so the
    result keeps its limits 0 and 1.

    Returns
    -------
    tvm.transform.Pass
        A function pass on every Relax function of the module.
    """
    x = wildcard()
    sigmoid = is_op("relax.sigmoid")(x)

    def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
        dtype = matches[sigmoid].ty.dtype
        if dtype != "float32":
            return expr
        one = relax.const(1.0, dtype)
        return relax.op.divide(one, relax.op.add(one, relax.op.exp(relax.op.negative(matches[x]))))

    @relax.transform.function_pass(opt_level=0, name="squeeze.sigmoid_as_exp")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        return rewrite_call(sigmoid, rewriter, func)

    return transform
