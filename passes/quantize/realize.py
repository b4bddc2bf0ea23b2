"""Realization: float Relax → the integer IR (int8 compute, int32 accumulation, requantization).

Walks ``main``'s bindings in order and re-emits them. A *layer* — conv2d or matmul with
constant weights, then an optional constant bias add, then an optional relu/clip, each used
once — becomes ``quantize → [pad with the zero point] → conv2d/matmul(int, out int32) + int32
bias → requantize(+activation)``. Activation×activation matmuls, residual adds, concats,
relu/clip, max/global-average pooling and shape ops stay in integers when their inputs are;
everything else runs in float between ``dequantize``/``quantize`` pairs, which FuseOps folds
into the neighbouring kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tvm
from tvm import relax

from .requantize import Requant, finish, requantize, rescale
from .schemes import QuantSpec, Scheme

ACTIVATIONS = ("relax.nn.relu", "relax.clip")
SHAPE_OPS = ("relax.reshape", "relax.permute_dims", "relax.flatten", "relax.squeeze", "relax.expand_dims",
             "relax.nn.max_pool2d")
LAYER_OPS = {"relax.nn.conv2d": "conv2d", "relax.matmul": "matmul"}

Const = tvm.ir.expr.Constant


@dataclass
class QTensor:
    """An integer tensor and what its codes mean: ``real = scale · (q - zero)``."""

    expr: relax.Expr
    scale: float
    zero: int
    spec: QuantSpec


def _shape(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


def _const_array(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, Const) else None


@dataclass
class _Walk:
    """One realization walk over a dataflow function."""

    scheme: Scheme
    ranges: dict
    keep_float: Callable[[int, str], str]
    uses: dict
    consumer: dict
    bb: relax.BlockBuilder = field(default_factory=relax.BlockBuilder)
    env: dict = field(default_factory=dict)    # original var -> float expr
    quant: dict = field(default_factory=dict)  # original var -> its integer view
    views: dict = field(default_factory=dict)  # (original var, dtype) -> other integer views
    consumed: set = field(default_factory=set)
    records: list = field(default_factory=list)

    # ---- views of an original value --------------------------------------------------------
    def as_float(self, v: relax.Expr) -> relax.Expr:
        if not isinstance(v, relax.Var):
            return v
        if v not in self.env:
            q = self.quant[v]
            self.env[v] = self.bb.emit(relax.op.dequantize(
                q.expr, relax.const(q.scale, "float32"), relax.const(q.zero, q.spec.dtype), out_dtype="float32"))
        return self.env[v]

    def as_quant(self, v: relax.Expr, spec: QuantSpec) -> QTensor | None:
        """``v`` as codes of ``spec`` (reusing an existing view of the same dtype)."""
        if not isinstance(v, relax.Var):
            return None
        q = self.quant.get(v)
        if q is not None and q.spec.dtype == spec.dtype:
            return q
        if (v, spec.dtype) not in self.views:
            if v not in self.ranges:
                return None
            scale, zero = (float(a) for a in spec.qparams(*self.ranges[v]))
            expr = self.bb.emit(relax.op.quantize(self.as_float(v), relax.const(scale, "float32"),
                                                  relax.const(int(zero), spec.dtype), out_dtype=spec.dtype))
            self.views[(v, spec.dtype)] = QTensor(expr, scale, int(zero), spec)
        q = self.views[(v, spec.dtype)]
        self.quant.setdefault(v, q)
        return q

    def out_params(self, v: relax.Var, spec: QuantSpec, act: relax.Call | None) -> tuple[float, int, int, int]:
        """Scale, zero point and clip bounds (activation fused) for the output ``v``."""
        scale, zero = (float(a) for a in spec.qparams(*self.ranges[v]))
        zero = int(zero)
        lo, hi = spec.qmin, spec.qmax
        if act is not None and act.op.name == "relax.nn.relu":
            lo = max(lo, zero)
        elif act is not None:
            lo = max(lo, int(np.round(float(act.args[1].value) / scale)) + zero)
            hi = min(hi, int(np.round(float(act.args[2].value) / scale)) + zero)
        return scale, zero, lo, hi

    def set_quant(self, v: relax.Var, expr: relax.Expr, scale: float, zero: int, spec: QuantSpec) -> None:
        self.quant[v] = QTensor(self.bb.emit(expr), scale, zero, spec)

    # ---- fusion helpers -----------------------------------------------------------------------
    def follow(self, var: relax.Var, ops: tuple[str, ...], const_arg: bool = False):
        """The single consumer binding of ``var`` if it is one of ``ops`` (else None)."""
        binding = self.consumer.get(var) if self.uses.get(var, 0) == 1 else None
        if binding is None:
            return None
        call = binding.value
        if not isinstance(call, relax.Call) or getattr(call.op, "name", "") not in ops:
            return None
        if const_arg and not (call.args[0].same_as(var) and isinstance(call.args[1], Const)):
            return None
        return binding

    def activation_after(self, var: relax.Var):
        return self.follow(var, ACTIVATIONS)

    # ---- handlers ------------------------------------------------------------------------------
    def weighted_layer(self, binding, index: int) -> bool:
        call, spec = binding.value, self.scheme.activations
        op = call.op.name
        x, weight = call.args[0], _const_array(call.args[1])
        if op == "relax.nn.conv2d" and (call.attrs.data_layout != "NCHW" or call.attrs.kernel_layout != "OIHW"):
            return False
        chain, last = [binding.var], binding
        bias_b = self.follow(binding.var, ("relax.add",), const_arg=True)
        out_axis = 1 if op == "relax.nn.conv2d" else -1
        channels = _shape(binding.var)[out_axis]
        bias = None
        if bias_b is not None and _const_array(bias_b.value.args[1]).size == channels:
            bias, last = _const_array(bias_b.value.args[1]).reshape(-1), bias_b
            chain.append(bias_b.var)
        act_b = self.activation_after(last.var)
        if act_b is not None:
            chain.append(act_b.var)
            last = act_b
        final = last.var
        xq = self.as_quant(x, spec)
        if xq is None or final not in self.ranges:
            return False
        w_axis = 0 if op == "relax.nn.conv2d" else 1
        w_scale, _ = self.scheme.weight_qparams(weight, w_axis)
        w_shape = [1] * weight.ndim
        w_shape[w_axis] = -1
        w_scale_b = np.broadcast_to(np.asarray(w_scale).reshape(w_shape) if np.size(w_scale) > 1 else w_scale,
                                    weight.shape)
        wq = self.scheme.weights.quantize(weight, w_scale_b, 0).astype("int8")
        reduce_axes = tuple(i for i in range(weight.ndim) if i != w_axis)
        per_out_scale = xq.scale * np.broadcast_to(np.asarray(w_scale).reshape(-1), (channels,))
        acc_bias = -xq.zero * wq.astype(np.int64).sum(axis=reduce_axes)
        if bias is not None:
            acc_bias = acc_bias + np.round(bias / per_out_scale).astype(np.int64)
        data = xq.expr
        if op == "relax.nn.conv2d":
            attrs = call.attrs
            padding = [int(p) for p in attrs.padding]
            if xq.zero != 0 and any(padding):
                top, left, bottom, right = padding
                data = relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(xq.zero))
                padding = [0, 0, 0, 0]
            acc = relax.op.nn.conv2d(data, relax.const(wq), strides=attrs.strides, padding=padding,
                                     dilation=attrs.dilation, groups=attrs.groups, out_dtype="int32")
            bias_shape = (1, channels, 1, 1)
        else:
            acc = relax.op.matmul(data, relax.const(wq), out_dtype="int32")
            bias_shape = (channels,)
        if np.any(acc_bias):
            acc = relax.op.add(acc, relax.const(acc_bias.reshape(bias_shape).astype(np.int32)))
        scale, zero, lo, hi = self.out_params(final, spec, act_b.value if act_b is not None else None)
        rq = Requant(per_out_scale / scale, zero, lo, hi, spec.dtype, self.scheme.integer_only)
        self.set_quant(final, requantize(acc, rq, len(_shape(binding.var)), out_axis), scale, zero, spec)
        self.consumed.update(chain)
        return True

    def activation_matmul(self, binding) -> bool:
        call, spec = binding.value, self.scheme.activations
        operand = QuantSpec(spec.bits, symmetric=True, power_of_two=spec.power_of_two)
        a, b = (self.as_quant(arg, operand) for arg in call.args[:2])
        act_b = self.activation_after(binding.var)
        final = act_b.var if act_b is not None else binding.var
        if a is None or b is None or final not in self.ranges:
            return False
        acc = relax.op.matmul(a.expr, b.expr, out_dtype="int32")
        scale, zero, lo, hi = self.out_params(final, spec, act_b.value if act_b is not None else None)
        rq = Requant(np.array([a.scale * b.scale / scale]), zero, lo, hi, spec.dtype, self.scheme.integer_only)
        self.set_quant(final, requantize(acc, rq, len(_shape(binding.var)), -1), scale, zero, spec)
        self.consumed.update([binding.var, final])
        return True

    def merge(self, binding, inputs: list, combine: Callable[[list], relax.Expr]) -> bool:
        """Residual add / concat: rescale each input to the output's scale, combine, finish."""
        spec, integer_only = self.scheme.activations, self.scheme.integer_only
        qs = [self.quant.get(v) or self.as_quant(v, spec) for v in inputs]
        act_b = self.activation_after(binding.var)
        final = act_b.var if act_b is not None else binding.var
        if any(q is None for q in qs) or final not in self.ranges:
            return False
        scale, zero, lo, hi = self.out_params(final, spec, act_b.value if act_b is not None else None)
        terms = []
        for q in qs:
            centred = relax.op.subtract(relax.op.astype(q.expr, "int32"), relax.const(np.int32(q.zero), "int32"))
            terms.append(rescale(centred, np.array([q.scale / scale]), len(_shape(binding.var)), 1, integer_only))
        self.set_quant(final, finish(combine(terms), zero, lo, hi, spec.dtype, integer_only), scale, zero, spec)
        self.consumed.update([binding.var, final])
        return True

    def integer_unary(self, binding) -> bool:
        """Ops applied directly to codes: shape ops, max pooling, relu/clip, global average."""
        call = binding.value
        q = self.quant.get(call.args[0]) if isinstance(call.args[0], relax.Var) else None
        if q is None:
            return False
        op = call.op.name
        if op in SHAPE_OPS:
            expr = relax.Call(call.op, [q.expr, *call.args[1:]], call.attrs)
        elif op in ACTIVATIONS:
            scale, zero, lo, hi = q.scale, q.zero, q.spec.qmin, q.spec.qmax
            if op == "relax.nn.relu":
                lo = max(lo, zero)
            else:
                lo = max(lo, int(np.round(float(call.args[1].value) / scale)) + zero)
                hi = min(hi, int(np.round(float(call.args[2].value) / scale)) + zero)
            expr = relax.op.clip(q.expr, lo, hi)
        elif op == "relax.mean":
            axes = [int(a) for a in call.attrs.axis]
            count = int(np.prod([_shape(call.args[0])[a] for a in axes]))
            total = relax.op.sum(relax.op.astype(q.expr, "int32"), axis=axes, keepdims=bool(call.attrs.keepdims))
            centred = relax.op.subtract(total, relax.const(np.int32(q.zero * count), "int32"))
            scaled = rescale(centred, np.array([1.0 / count]), len(_shape(binding.var)), -1, self.scheme.integer_only)
            expr = finish(scaled, q.zero, q.spec.qmin, q.spec.qmax, q.spec.dtype, self.scheme.integer_only)
        else:
            return False
        self.set_quant(binding.var, expr, q.scale, q.zero, q.spec)
        return True

    def visit(self, binding, layer_index: int) -> None:
        call = binding.value
        op = getattr(call.op, "name", "") if isinstance(call, relax.Call) else ""
        done = False
        if op in LAYER_OPS:
            reason = self.keep_float(layer_index, LAYER_OPS[op])
            if reason:
                self.records.append({"index": layer_index, "mode": "float", "reason": reason})
            elif isinstance(call.args[1], Const):
                done = self.weighted_layer(binding, layer_index)
            elif op == "relax.matmul":
                done = self.activation_matmul(binding)
            if not reason:
                self.records.append({"index": layer_index, "mode": self.scheme.name if done else "float",
                                     "reason": "" if done else "no calibrated range"})
        elif op == "relax.add" and all(isinstance(a, relax.Var) for a in call.args):
            done = self.merge(binding, list(call.args[:2]), lambda t: relax.op.add(t[0], t[1]))
        elif op == "relax.concat":
            done = self.merge(binding, list(call.args[0].fields),
                              lambda t: relax.op.concat(t, axis=int(call.attrs.axis)))
        elif op:
            done = self.integer_unary(binding)
        if not done:
            new = relax.Call(call.op, [self._float_arg(a) for a in call.args], call.attrs, call.ty_args) \
                if isinstance(call, relax.Call) else self._float_arg(call)
            self.env[binding.var] = self.bb.emit(new)

    def _float_arg(self, arg):
        if isinstance(arg, relax.Tuple):
            return relax.Tuple([self._float_arg(f) for f in arg.fields])
        return self.as_float(arg)


def _uses(func: relax.Function) -> tuple[dict, dict]:
    """Use counts of each var and, for single-use vars, the binding that consumes them."""
    uses: dict = {}
    consumer: dict = {}

    def visit_expr(expr, binding):
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1
            consumer[expr] = binding
        elif isinstance(expr, relax.Tuple):
            for f in expr.fields:
                visit_expr(f, binding)
        elif isinstance(expr, relax.Call):
            for a in expr.args:
                visit_expr(a, binding)
        elif isinstance(expr, relax.TupleGetItem):
            visit_expr(expr.tuple_value, binding)

    for block in func.body.blocks:
        for binding in block.bindings:
            visit_expr(binding.value, binding)
    visit_expr(func.body.body, None)
    return uses, consumer


def realize_function(func: relax.Function, scheme: Scheme, ranges: dict,
                     keep_float: Callable[[int, str], str]) -> tuple[relax.Function, list[dict]]:
    """Rewrite one Relax function into the integer IR; returns it and per-layer records."""
    uses, consumer = _uses(func)
    walk = _Walk(scheme, ranges, keep_float, uses, consumer)
    num_input = int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs else len(func.params)
    params = list(func.params[:num_input])
    with walk.bb.function("main", params, attrs=dict(func.attrs) if func.attrs else None):
        with walk.bb.dataflow():
            for p in params:
                walk.env[p] = p
            layer_index = 0
            for block in func.body.blocks:
                for binding in block.bindings:
                    if binding.var in walk.consumed:
                        continue
                    walk.visit(binding, layer_index)
                    if isinstance(binding.value, relax.Call) and getattr(binding.value.op, "name", "") in LAYER_OPS:
                        layer_index += 1
            out = walk._float_arg(func.body.body)
            out = walk.bb.emit_output(out)
        walk.bb.emit_func_output(out)
    return walk.bb.get()["main"], walk.records
