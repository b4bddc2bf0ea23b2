"""Element-wise regions of one quantized tensor, realized as a 256-entry lookup table.

An activation such as HardSwish, HardSigmoid, Sigmoid, SiLU, Tanh or GELU imports as a chain of
element-wise Relax ops (``multiply → add → clip → multiply`` for HardSwish) whose only tensor
input is one quantized value ``x``. Whatever the chain computes, an 8-bit ``x`` has at most 256
codes: the chain is evaluated on all of them here, in float64, and each result quantized to the
chain output's calibrated scale, so the integer IR holds one ``take(table, codes)`` where a float
model had the chain (as TensorRT's and TFLite's int8 activations do).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import tvm
from tvm import relax

from compiler.ir import op_name

Const = tvm.ir.expr.Constant

_erf = np.vectorize(math.erf)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


UNARY: dict[str, Callable[[np.ndarray, relax.Call], np.ndarray]] = {
    "relax.sigmoid": lambda x, _: _sigmoid(x),
    "relax.tanh": lambda x, _: np.tanh(x),
    "relax.exp": lambda x, _: np.exp(x),
    "relax.erf": lambda x, _: _erf(x),
    "relax.sqrt": lambda x, _: np.sqrt(x),
    "relax.rsqrt": lambda x, _: 1.0 / np.sqrt(x),
    "relax.negative": lambda x, _: -x,
    "relax.abs": lambda x, _: np.abs(x),
    "relax.nn.relu": lambda x, _: np.maximum(x, 0.0),
    "relax.nn.silu": lambda x, _: x * _sigmoid(x),
    "relax.nn.gelu": lambda x, _: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "relax.nn.gelu_tanh": lambda x, _: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
    "relax.nn.leakyrelu": lambda x, call: np.where(x >= 0, x, float(call.attrs.alpha) * x),
    "relax.clip": lambda x, call: np.clip(x, float(call.args[1].value), float(call.args[2].value)),
}
BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply, "relax.divide": np.divide,
    "relax.power": np.power, "relax.minimum": np.minimum, "relax.maximum": np.maximum,
}
WINDOW = 64  # bindings looked at after a region's first op
_LINEAR = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.clip", "relax.nn.relu")


def _scalar(expr) -> float | None:
    if isinstance(expr, Const) and expr.value.numpy().size == 1:
        return float(expr.value.numpy().reshape(()))
    return None


def _operands(call: relax.Call, region: set) -> list | None:
    """The tensor operands of an element-wise ``call`` on region values and scalars, else None."""
    op = op_name(call)
    if op in UNARY:
        args = call.args[:1]
    elif op in BINARY:
        args = call.args[:2]
    else:
        return None
    if not all(a in region or _scalar(a) is not None for a in args if isinstance(a, (relax.Var, Const))):
        return None
    return args if any(isinstance(a, relax.Var) and a in region for a in args) else None


def region_after(start: relax.Var, later: list, uses: dict) -> tuple[list, relax.Var] | None:
    """The element-wise bindings computing one value from ``start`` alone, and that value.

    ``later``: the bindings from the first candidate on, in order; ``uses``: use counts. Every
    value of the region but its output is used only inside it. Regions of relu/clip and scaling
    alone are left to cheaper integer forms (None).
    """
    region, members = {start}, []
    for binding in later[:WINDOW]:
        if isinstance(binding.value, relax.Call) and _operands(binding.value, region) is not None:
            region.add(binding.var)
            members.append(binding)
    for end in range(len(members), 0, -1):
        chosen = _ancestors(members[:end], members[end - 1].var, start)
        inside = [b for b in members[:end] if b.var in chosen]
        counts: dict = {}
        for b in inside:
            for a in b.value.args:
                if isinstance(a, relax.Var):
                    counts[a] = counts.get(a, 0) + 1
        if all(counts.get(b.var, 0) == uses.get(b.var, 0) for b in inside[:-1]) and inside[0].same_as(later[0]):
            if any(op_name(b.value) not in _LINEAR for b in inside) or len(inside) > 2:
                return inside, inside[-1].var
            return None
    return None


def _ancestors(members: list, sink: relax.Var, start: relax.Var) -> set:
    by_var = {b.var: b for b in members}
    seen, todo = set(), [sink]
    while todo:
        v = todo.pop()
        if v in seen or v is start or v not in by_var:
            continue
        seen.add(v)
        todo += [a for a in by_var[v].value.args if isinstance(a, relax.Var)]
    return seen


def evaluate(members: list, start: relax.Var, x: np.ndarray) -> np.ndarray:
    """The region's output for input values ``x`` (float64)."""
    values = {start: x}

    def value(a):
        return values[a] if isinstance(a, relax.Var) else _scalar(a)

    with np.errstate(all="ignore"):
        for b in members:
            op = op_name(b.value)
            if op in UNARY:
                values[b.var] = UNARY[op](value(b.value.args[0]), b.value)
            else:
                values[b.var] = BINARY[op](value(b.value.args[0]), value(b.value.args[1]))
    return np.broadcast_to(values[members[-1].var], x.shape).astype(np.float64)


def table(members: list, start: relax.Var, codes: np.ndarray, in_scale: float, in_zero: int,
          out_scale: float, out_zero: int, lo: int, hi: int) -> np.ndarray | None:
    """Output codes (clipped to ``[lo, hi]``) for input ``codes``; None where the region is not finite."""
    real = evaluate(members, start, in_scale * (codes - in_zero).astype(np.float64))
    if not np.all(np.isfinite(real)):
        return None
    return np.clip(np.round(real / out_scale) + out_zero, lo, hi).astype(np.int64)
