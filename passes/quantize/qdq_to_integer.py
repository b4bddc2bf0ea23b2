"""QDQ import: ``dequantize → float op → quantize`` chains become the integer IR.

ONNX models that already hold QuantizeLinear/DequantizeLinear (QAT exports, ONNX Runtime's
``quantize_static``) import into Relax as ``R.quantize``/``R.dequantize`` around float ops,
which TVM runs in float. This pass rewrites, with the scales and zero points the model
declares (so results track ONNX Runtime's integer kernels):

- ``quantize(act(conv2d|matmul(dequantize(x), dequantize(W)) + dequantize(b)))`` → the same
  integer layer PTQ produces (:func:`realize.integer_layer`);
- ``quantize(act(add(dequantize(a), dequantize(b))))`` → integer residual add;
- ``quantize(mean(dequantize(x)))`` → integer global average pooling;
- ``quantize(op(dequantize(x)))`` with the same scale and zero point, for max pooling and
  shape ops → ``op(x)``.

Remaining ``dequantize``/``quantize`` pairs stay as they are (float islands). Run it before
constant folding, which would fold the weights' ``dequantize``.
"""
from __future__ import annotations

import json

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import CallPattern, is_const, is_op, rewrite_call, wildcard

from compiler.ir import bindings, op_name, replace_main

from ..canonicalize import canonicalize_clip
from ..registry import register_pass
from .realize import SHAPE_OPS, Activation, QOutput, QTensor, integer_layer, integer_mean, integer_merge
from .schemes import QuantSpec

_DTYPE_SPECS = {"uint8": QuantSpec(8, symmetric=False), "int8": QuantSpec(8, symmetric=True)}


def _value(expr) -> np.ndarray:
    return expr.value.numpy()


def _qtensor(dq: relax.Call) -> QTensor | None:
    """The integer input of ``dequantize(q, scale, zero)`` with per-tensor parameters."""
    scale, zero = _value(dq.args[1]), _value(dq.args[2])
    dtype = str(dq.args[0].ty.dtype)
    if scale.size != 1 or dtype not in _DTYPE_SPECS:
        return None
    return QTensor(dq.args[0], float(scale.reshape(())), int(zero.reshape(())), _DTYPE_SPECS[dtype])


def _output(q: relax.Call, act: Activation) -> QOutput | None:
    scale, zero = _value(q.args[1]), _value(q.args[2])
    dtype = str(q.attrs.out_dtype)
    if scale.size != 1 or dtype not in _DTYPE_SPECS:
        return None
    scale, zero = float(scale.reshape(())), int(zero.reshape(()))
    return QOutput(scale, zero, *act.codes(scale, zero, _DTYPE_SPECS[dtype]), dtype)


def _activation(call: relax.Call | None) -> Activation:
    if call is None:
        return Activation()
    if call.op.name == "relax.nn.relu":
        return Activation(lo=0.0)
    return Activation(lo=float(call.args[1].value), hi=float(call.args[2].value))


def _weights(dq: relax.Call, channel_axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Symmetric int8 weight codes and their scales (one, or one per output channel: the
    dequantize's axis must be ``channel_axis`` of the weight)."""
    codes, scale, zero = _value(dq.args[0]), _value(dq.args[1]), _value(dq.args[2])
    if codes.dtype != np.int8 or np.any(zero != 0):
        return None
    if scale.size > 1 and int(dq.attrs.axis) % codes.ndim != channel_axis % codes.ndim:
        return None
    return codes, scale.reshape(-1)


def _channel_values(const: relax.Constant, added: relax.Expr, layer: relax.Call, axis: int) -> np.ndarray | None:
    """The float constant ``const``, ``added`` to ``layer`` (reshaped, maybe), as one value per
    output channel, or None when it varies along another axis."""
    value = _value(const).reshape([int(d) for d in added.ty.shape])
    ndim = len(layer.ty.shape)
    dims = [1] * (ndim - value.ndim) + list(value.shape)  # broadcast from the right
    if value.ndim > ndim or any(d != 1 for i, d in enumerate(dims) if i != axis % ndim):
        return None
    return value.astype(np.float64).reshape(-1)


def weight_bits(codes: np.ndarray) -> int:
    """Bits the weight codes need: 1 for ±1 (bipolar), else the narrowest signed width."""
    if np.isin(codes, (-1, 1)).all():
        return 1
    lo, hi = int(codes.min()), int(codes.max())
    return max(2, next(b for b in range(2, 9) if -(2 ** (b - 1)) <= lo and hi < 2 ** (b - 1)))


def code_bits(func: relax.Function) -> dict:
    """Bits of the codes each ``quantize`` binding of ``func`` writes: its container's, or fewer
    behind a clip (a QONNX 2-bit activation is a uint8 quantize of a clip to ``[0, 3·s]``)."""
    values = {b.var: b.value for b in bindings(func)}
    bits = {}
    for var, value in values.items():
        if op_name(value) != "relax.quantize":
            continue
        act = values.get(value.args[0])
        output = _output(value, _activation(act if op_name(act) in ("relax.clip", "relax.nn.relu") else None))
        if output is not None:
            bits[var] = (output.hi - output.lo).bit_length()
    return bits


def _patterns(records: list, integer_only: bool, bits: dict):
    """(pattern, rewriter) pairs, most specific first; ``bits`` of the codes layers read."""
    deq = lambda x: is_op("relax.dequantize")(x, is_const(), is_const())  # noqa: E731
    x, w, b = deq(wildcard()), deq(is_const()), deq(is_const())
    w_t = is_op("relax.permute_dims")(w)
    layer = is_op("relax.nn.conv2d")(x, w) | is_op("relax.matmul")(x, w_t) | is_op("relax.matmul")(x, w)
    fb = is_const()  # a float bias (QONNX/Brevitas models leave biases unquantized)
    bias = b | fb | is_op("relax.reshape")(b | fb, wildcard())
    with_bias = is_op("relax.add")(layer, bias)
    biased = layer | with_bias
    act = is_op("relax.nn.relu")(biased) | is_op("relax.clip")(biased, wildcard(), wildcard())
    out = is_op("relax.quantize")(biased | act, is_const(), is_const())

    def layer_rewrite(expr, m):
        xq = _qtensor(m[x])
        transposed, conv = w_t in m, m[layer].op.name == "relax.nn.conv2d"
        weights = _weights(m[w], 0 if transposed or conv else 1)
        if weights is not None and transposed:
            weights = weights[0].T.copy(), weights[1]
        output = _output(expr, _activation(m.get(act)))
        if xq is None or weights is None or output is None:
            return expr
        bias_value = None
        if b in m:
            codes, scale, zero = (_value(a) for a in m[b].args)
            bias_value = ((codes.astype(np.int64) - zero) * scale).reshape(-1)
        elif fb in m:
            bias_value = _channel_values(m[fb], m[with_bias].args[1], m[layer], 1 if conv else -1)
            if bias_value is None:
                return expr
        a_type = f"{'u' if xq.spec.dtype == 'uint8' else ''}int{bits.get(m[x].args[0], 8)}"
        records.append({"index": len(records), "mode": f"qdq_{a_type}×int{weight_bits(weights[0])}", "reason": ""})
        return integer_layer(m[layer], xq, *weights, bias_value, output, integer_only)

    a, c = deq(wildcard()), deq(wildcard())
    added = is_op("relax.add")(a, c)
    add_act = is_op("relax.nn.relu")(added) | is_op("relax.clip")(added, wildcard(), wildcard())
    add_out = is_op("relax.quantize")(added | add_act, is_const(), is_const())

    def add_rewrite(expr, m):
        qs = [_qtensor(m[a]), _qtensor(m[c])]
        output = _output(expr, _activation(m.get(add_act)))
        if None in qs or output is None:
            return expr
        return integer_merge(qs, output, lambda t: relax.op.add(t[0], t[1]), len(expr.ty.shape), integer_only)

    source = deq(wildcard())
    unary = CallPattern(wildcard(), [source], varg_default_wildcard=True)
    unary_out = is_op("relax.quantize")(unary, is_const(), is_const())

    def unary_rewrite(expr, m):
        call = m[unary]
        if not isinstance(call.op, tvm.ir.Op):
            return expr
        q, output = _qtensor(m[source]), _output(expr, Activation())
        if q is None or output is None:
            return expr
        op = call.op.name
        if op == "relax.mean":
            return integer_mean(q, call, output, integer_only)
        same = np.isclose(q.scale, output.scale, rtol=1e-6) and q.zero == output.zero and q.spec.dtype == output.dtype
        if op in SHAPE_OPS and same:
            return relax.Call(call.op, [q.expr, *call.args[1:]], call.attrs, call.ty_args)
        return expr

    return [(out, layer_rewrite), (add_out, add_rewrite), (unary_out, unary_rewrite)]


@register_pass("qdq_to_integer")
def qdq_to_integer(integer_only: bool = False) -> tvm.transform.Pass:
    """Rewrite a QDQ model's quantize/dequantize chains into the integer IR.

    Parameters
    ----------
    integer_only : bool
        Fixed-point requantization instead of float multipliers.

    Returns
    -------
    tvm.transform.Pass
        A module pass over ``main`` (weights bound, not yet constant-folded; other functions
        kept); per-layer decisions go to ``main``'s ``squeeze.quantized`` attribute.
    """

    @tvm.transform.module_pass(opt_level=0, name="qdq_to_integer")
    def transform(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = relax.transform.CanonicalizeBindings()(canonicalize_clip()(mod))["main"]
        records: list = []
        for pattern, rewriter in _patterns(records, integer_only, code_bits(func)):
            func = rewrite_call(pattern, rewriter, func)
        info = {"scheme": "qdq (from the model)", "observer": "none", "layers": records}
        return replace_main(mod, func.with_attr("squeeze.quantized", json.dumps(info)))

    return transform


def has_qdq(mod: tvm.IRModule) -> bool:
    """Whether ``main`` dequantizes anything (a QDQ model)."""
    return any(op_name(b.value) == "relax.dequantize" for b in bindings(mod["main"]))
