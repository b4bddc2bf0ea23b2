"""Per-layer summaries of a Program (op, shapes, MACs, parameter bytes) and their text tables."""
from __future__ import annotations

import json
import math
from typing import Iterable, Sequence

import numpy as np
import tvm
from tvm import relax

from .ir import layer_names

# Ops worth a row: those that carry weights or do the arithmetic.
_LAYER_OPS = {
    "relax.nn.conv2d": "conv2d",
    "relax.matmul": "matmul",
    "relax.nn.batch_norm": "batch_norm",
    "relax.nn.layer_norm": "layer_norm",
    "relax.nn.max_pool2d": "max_pool2d",
    "relax.nn.avg_pool2d": "avg_pool2d",
    "relax.nn.adaptive_avg_pool2d": "global_avg_pool",
    "relax.mean": "mean",
    "relax.nn.softmax": "softmax",
}


def _shape(expr: relax.Expr) -> tuple[int, ...]:
    ty = expr.ty
    return tuple(int(d) for d in ty.shape) if getattr(ty, "shape", None) is not None else ()


def _macs(call: relax.Call, out_shape: Sequence[int]) -> int:
    name = call.op.name
    if name == "relax.nn.conv2d":
        w = _shape(call.args[1])
        layout = str(call.attrs.kernel_layout)
        in_per_group = w[layout.index("I")]
        kernel = w[layout.index("H")] * w[layout.index("W")]
        return math.prod(out_shape) * in_per_group * kernel
    if name == "relax.matmul":
        return math.prod(out_shape) * _shape(call.args[0])[-1]
    return 0


def _dtypes(call: relax.Call, out: relax.Var) -> str:
    """``float32``, or ``uint8×int8→int32`` for integer layers."""
    ins = [str(a.ty.dtype) for a in call.args[:2] if isinstance(getattr(a, "ty", None), relax.TensorType)]
    if call.op.name not in ("relax.nn.conv2d", "relax.matmul") or ins[0] == "float32":
        return ins[0]
    return "×".join(ins) + f"→{out.ty.dtype}"


def _const_bytes(call: relax.Call) -> int:
    return sum(a.value.numpy().nbytes for a in call.args if isinstance(a, tvm.ir.expr.Constant))


def layer_table(mod) -> list[dict]:
    """One row per layer of ``main``: name, op, input and output shapes, MACs, parameter bytes.

    A constant added to a layer's output (its bias) counts towards that layer's parameters.
    """
    func = mod["main"]
    names = layer_names(func)
    rows: list[dict] = []
    by_var: dict = {}
    counts: dict[str, int] = {}
    layers = 0
    for block in func.body.blocks:
        for binding in block.bindings:
            call = binding.value
            if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
                continue
            op = call.op.name
            if op == "relax.add" and call.args[0] in by_var:
                by_var[call.args[0]]["param_bytes"] += _const_bytes(call)
                continue
            if op not in _LAYER_OPS:
                continue
            out = _shape(call.args[0]) if op == "relax.nn.batch_norm" else _shape(binding.var)
            kind = _LAYER_OPS[op]
            counts[kind] = counts.get(kind, -1) + 1
            name = f"{kind}_{counts[kind]}"
            if kind in ("conv2d", "matmul"):
                name = names[layers] if layers < len(names) else name
                layers += 1
            row = by_var[binding.var] = {
                "name": name,
                "op": kind,
                "input": list(_shape(call.args[0])),
                "output": list(out),
                "dtype": _dtypes(call, binding.var),
                "macs": _macs(call, out),
                "param_bytes": _const_bytes(call),
            }
            rows.append(row)
    return rows


_QDQ = ("relax.quantize", "relax.dequantize")
_INT8_IO = ("relax.nn.layer_norm", "relax.nn.softmax")


def float_islands(func: relax.Function) -> tuple[dict[str, int], dict[str, int]]:
    """The float ops of an integer model that feed a ``quantize`` again, as two ``{op: count}``.

    The first holds the float islands: ops between a ``dequantize`` and a ``quantize``. The
    second holds the single ops read straight from a ``dequantize`` and written straight to
    ``quantize`` (LayerNorm, Softmax): float arithmetic in one kernel with integer inputs and
    outputs once fused. The float prologue (inputs before their first quantize) and epilogue
    (after the last dequantize, into the outputs) are neither.
    """
    calls = [(b.var, b.value) for block in func.body.blocks for b in block.bindings
             if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)]
    op_of = {v: call.op.name for v, call in calls}
    floats = {v for v, call in calls if call.op.name not in _QDQ and "float" in str(getattr(v.ty, "dtype", ""))}
    from_codes = {v for v, name in op_of.items() if name == "relax.dequantize"}
    feeds_codes: set = set()
    users: dict = {}
    for v, call in calls:  # forward: computed from integer codes
        for a in call.args:
            if isinstance(a, relax.Var):
                users.setdefault(a, []).append(op_of[v])
        if v in floats and any(a in from_codes for a in call.args if isinstance(a, relax.Var)):
            from_codes.add(v)
    for v, call in reversed(calls):  # backward: reaches a quantize
        if call.op.name == "relax.quantize" or v in feeds_codes:
            feeds_codes.update(a for a in call.args if isinstance(a, relax.Var) and a in floats)
    islands: dict[str, int] = {}
    int8_io: dict[str, int] = {}
    for v, call in calls:
        if v in from_codes and v in feeds_codes and v in floats:
            args = [a for a in call.args if isinstance(a, relax.Var) and a in op_of and "float" in str(a.ty.dtype)]
            sandwiched = all(op_of[a] == "relax.dequantize" for a in args) and \
                all(u == "relax.quantize" for u in users.get(v, []))
            into = int8_io if sandwiched and call.op.name in _INT8_IO else islands
            into[call.op.name] = into.get(call.op.name, 0) + 1
    return islands, int8_io


def compression_summary(mod) -> dict:
    """What the manifest records about compression: per-layer rows and pass decisions."""
    func = mod["main"]
    summary = {"layers": layer_table(mod)}
    if func.attrs and "squeeze.quantized" in func.attrs:
        summary["quantization"] = json.loads(str(func.attrs["squeeze.quantized"]))
        summary["float_islands"], summary["int8_io_float_ops"] = float_islands(func)
    return summary


def format_table(rows: Iterable[dict], columns: Sequence[str], totals: bool = True) -> str:
    """Render ``rows`` as an aligned text table, with a totals line for numeric columns."""
    rows = list(rows)
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    total = ["total"] + [
        _cell(sum(r.get(c) or 0 for r in rows)) if rows and isinstance(rows[0].get(c), (int, float)) else ""
        for c in columns[1:]
    ]
    widths = [max(len(c), *(len(row[i]) for row in cells + [total])) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    sep = "  ".join("-" * w for w in widths)
    footer = [sep, line(total)] if totals else []
    return "\n".join([line(columns), sep, *map(line, cells), *footer])


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return "x".join(map(str, v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)
