"""Realization: float Relax → the integer IR (int8 compute, int32 accumulation, requantization).

Walks ``main``'s bindings in order and re-emits them. A *layer* — conv2d or matmul with
constant weights, then an optional constant bias add, then an optional activation (relu,
clip, or relu + per-channel minimum as left by equalization), each used once — becomes
``quantize → [pad with the zero point] → conv2d/matmul(int, out int32) + int32 bias →
requantize(+activation)``. Activation×activation matmuls, residual adds, concats, relu/clip,
max/global-average pooling, nearest and bilinear resize (:mod:`.resize`) and shape ops stay in
integers when their inputs are; everything
else runs in float between ``dequantize``/``quantize`` pairs, which FuseOps folds into the
neighbouring kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tvm
from tvm import relax

from compiler.ir import bindings, op_name, single_consumer, use_counts, user_inputs

from . import lut, resize
from .requantize import Requant, finish, requantize, rescale
from .schemes import QuantSpec, Scheme

SHAPE_OPS = ("relax.reshape", "relax.permute_dims", "relax.flatten", "relax.squeeze", "relax.expand_dims",
             "relax.strided_slice", "relax.nn.max_pool2d")
LAYER_OPS = {"relax.nn.conv2d": "conv2d", "relax.matmul": "matmul"}
# Ops computed in float inside one kernel that reads and writes codes (as TensorRT's int8 LayerNorm).
INT8_IO_OPS = ("relax.nn.layer_norm", "relax.nn.softmax")
Const = tvm.ir.expr.Constant


@dataclass
class QTensor:
    """An integer tensor and what its codes mean: ``real = scale · (q - zero)``."""

    expr: relax.Expr
    scale: float
    zero: int
    spec: QuantSpec


@dataclass(frozen=True)
class QOutput:
    """Codes a layer writes: scale, zero point, clip bounds (activation fused) and dtype."""

    scale: float
    zero: int
    lo: int
    hi: object  # int, or per-channel np.ndarray
    dtype: str


@dataclass
class Activation:
    """A fused activation: the bindings it spans and its real-valued clip bounds."""

    vars: list = field(default_factory=list)
    lo: float = -np.inf
    hi: object = np.inf  # float, or per-channel np.ndarray

    def apply_float(self, x: relax.Expr, ndim: int, axis: int) -> relax.Expr:
        """The activation on a float tensor."""
        hi = np.asarray(self.hi, dtype=np.float32)
        if np.isinf(self.lo) and np.all(np.isinf(hi)):
            return x
        x = relax.op.clip(x, float(self.lo), float(hi.max()))
        return relax.op.minimum(x, relax.const(_along(hi, ndim, axis))) if hi.size > 1 else x

    def codes(self, scale: float, zero: int, spec: QuantSpec) -> tuple[int, object]:
        """Integer clip bounds for an output with ``scale``/``zero``."""
        lo = spec.qmin if np.isinf(self.lo) else max(spec.qmin, int(np.round(self.lo / scale)) + zero)
        hi = np.asarray(self.hi, dtype=np.float64)
        hi_codes = np.minimum(spec.qmax, np.where(np.isinf(hi), spec.qmax, np.round(hi / scale) + zero))
        return lo, hi_codes.astype(np.int64) if hi_codes.size > 1 else int(hi_codes)


def _shape(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


def _const_array(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, Const) else None


def _weight_error_shift(error: np.ndarray, mean: np.ndarray, out_axis: int, groups: int) -> np.ndarray:
    """Expected output shift ``(W_q - W) · E[x]`` per output channel (conv OIHW or matmul KN)."""
    if out_axis == 1:  # matmul weight [K, N]
        return mean @ error
    per_input = error.sum(axis=(2, 3))                      # [O, I/groups]
    group_of = np.arange(error.shape[0]) // (error.shape[0] // groups)
    return (per_input * mean.reshape(groups, -1)[group_of]).sum(axis=1)


def _along(values, ndim: int, axis: int) -> np.ndarray:
    """Per-channel ``values`` shaped to broadcast along ``axis`` (scalars stay scalars)."""
    values = np.asarray(values)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return values.reshape(shape)


def _is_spatial(call: relax.Call) -> bool:
    """Whether a ``mean`` pools the spatial axes of an NCHW tensor (not a normalization's mean)."""
    ndim = len(_shape(call.args[0]))
    return ndim == 4 and sorted(int(a) % ndim for a in call.attrs.axis) == [2, 3]


def _per_channel(const: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether ``const`` broadcasts against ``shape`` along the channel axis (1) only."""
    dims = (1,) * (len(shape) - const.ndim) + tuple(const.shape)
    return len(dims) == len(shape) and dims[1] in (1, shape[1]) and all(d == 1 for i, d in enumerate(dims) if i != 1)


# |int32 bias codes| stays below this: half the int32 range, the rest for the zero-point term
BIAS_CODE_LIMIT = 2**30


def _bias_fitting(w_scale: np.ndarray, bias: np.ndarray, x_scale: float) -> np.ndarray:
    """``w_scale`` raised where ``round(b / (s_x s_w))`` would not fit int32: a nearly dead channel
    (weights ~1e-9 after BatchNorm folding or equalization) that still has a bias. Its weight codes
    become 0 or ±1 instead of the bias wrapping around; ONNX Runtime's quantizer does the same."""
    floor = np.abs(np.asarray(bias, np.float64)) / (float(x_scale) * BIAS_CODE_LIMIT)
    floor = floor.max(initial=0.0) if np.size(w_scale) == 1 else floor.reshape(np.shape(w_scale))
    return np.maximum(w_scale, floor).astype(np.asarray(w_scale).dtype)


def integer_layer(call: relax.Call, xq: QTensor, codes: np.ndarray, w_scale, bias: np.ndarray | None,
                  out: QOutput | Activation, integer_only: bool) -> relax.Expr:
    """The integer form of a conv2d (NCHW/OIHW) or matmul (weights [K, N]) call.

    ``codes``/``w_scale``: symmetric int8 weights and their per-output-channel (or single) scale;
    ``bias``: float bias or None; ``out``: the output codes, or (for a model output) the
    activation to apply to the exact float result ``acc · s_x s_w``.
    Asymmetric inputs are padded with their zero point and their zero point is folded into the
    int32 bias: ``b' = round(b / (s_x s_w)) - z_x · Σ w_q``.
    """
    conv = op_name(call) == "relax.nn.conv2d"
    out_axis, w_axis = (1, 0) if conv else (-1, 1)
    ndim = len(_shape(call))
    channels = _shape(call)[out_axis]
    # float32 arithmetic, as ONNX Runtime computes its requantization scales
    per_out_scale = np.float32(xq.scale) * np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (channels,))
    acc_bias = -xq.zero * codes.astype(np.int64).sum(axis=tuple(i for i in range(codes.ndim) if i != w_axis))
    if bias is not None:
        acc_bias = acc_bias + np.round(bias / per_out_scale).astype(np.int64)
    if conv:
        attrs = call.attrs
        padding, data = [int(p) for p in attrs.padding], xq.expr
        if xq.zero != 0 and any(padding):
            top, left, bottom, right = padding
            data = relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(xq.zero))
            padding = [0, 0, 0, 0]
        acc = relax.op.nn.conv2d(data, relax.const(codes), strides=attrs.strides, padding=padding,
                                 dilation=attrs.dilation, groups=attrs.groups, out_dtype="int32")
    else:
        acc = relax.op.matmul(xq.expr, relax.const(codes), out_dtype="int32")
    if np.any(acc_bias):
        acc = relax.op.add(acc, relax.const(_along(acc_bias, ndim, out_axis).astype(np.int32)))
    if isinstance(out, Activation):
        real = relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(_along(per_out_scale, ndim, out_axis)))
        return out.apply_float(real, ndim, out_axis)
    rq = Requant(per_out_scale / np.float32(out.scale), out.zero, out.lo, out.hi, out.dtype, integer_only)
    return requantize(acc, rq, ndim, out_axis)


def centred(q: QTensor) -> relax.Expr:
    """``q``'s codes less its zero point, in int32."""
    return relax.op.subtract(relax.op.astype(q.expr, "int32"), relax.const(np.int32(q.zero), "int32"))


def integer_merge(qs: list[QTensor], out: QOutput, combine: Callable[[list], relax.Expr], ndim: int,
                  integer_only: bool) -> relax.Expr:
    """Residual add / concat in integers: each input rescaled to the output scale, then combined."""
    terms = []
    for q in qs:
        terms.append(rescale(centred(q), np.array([q.scale / out.scale]), ndim, 1, integer_only))
    return finish(combine(terms), out.zero, out.lo, out.hi, out.dtype, integer_only, ndim, 1)


def integer_mean(q: QTensor, call: relax.Call, out: QOutput, integer_only: bool) -> relax.Expr:
    """``mean`` over axes (global average pooling) of codes, requantized to ``out``."""
    axes = [int(a) for a in call.attrs.axis]
    count = int(np.prod([_shape(call.args[0])[a] for a in axes]))
    total = relax.op.sum(relax.op.astype(q.expr, "int32"), axis=axes, keepdims=bool(call.attrs.keepdims))
    total = relax.op.subtract(total, relax.const(np.int32(q.zero * count), "int32"))
    scaled = rescale(total, np.array([q.scale / (count * out.scale)]), len(_shape(call)), -1, integer_only)
    return finish(scaled, out.zero, out.lo, out.hi, out.dtype, integer_only)


@dataclass
class _Walk:
    """One realization walk over a dataflow function."""

    scheme: Scheme
    ranges: dict                               # original var -> calibrated (lo, hi)
    keep_float: Callable[[int, relax.Call], str]
    uses: dict
    consumer: dict
    means: dict | None = None                  # original var -> per-channel mean (bias correction)
    bb: relax.BlockBuilder = field(default_factory=relax.BlockBuilder)
    env: dict = field(default_factory=dict)    # original var -> float expr
    quant: dict = field(default_factory=dict)  # original var -> its integer view
    views: dict = field(default_factory=dict)  # (original var, dtype) -> integer views made here
    consumed: set = field(default_factory=set)
    records: list = field(default_factory=list)
    layers: dict = field(default_factory=dict)  # layer var -> what its integer form was made of
    splits: dict = field(default_factory=dict)  # original split var -> (its codes' tuple, QTensor, call)
    order: list = field(default_factory=list)   # all bindings, in order
    position: int = 0                            # index of the binding being visited
    layer_schemes: dict = field(default_factory=dict)  # layer index -> its own Scheme (mixed precision)
    weights: dict = field(default_factory=dict)  # layer var -> (codes, scales) chosen for it (AdaRound, range search)
    shifts: dict = field(default_factory=dict)   # layer var -> per-channel output shift subtracted from the bias

    # ---- views of an original value --------------------------------------------------------
    def as_float(self, v: relax.Expr) -> relax.Expr:
        if isinstance(v, relax.Tuple):
            return relax.Tuple([self.as_float(f) for f in v.fields])
        if isinstance(v, relax.TupleGetItem):
            return relax.TupleGetItem(self.as_float(v.tuple_value), v.index)
        if not isinstance(v, relax.Var):
            return v
        if v not in self.env and v in self.splits:  # a split done on codes, wanted in float too
            _, _, call = self.splits[v]
            self.env[v] = self.bb.emit(relax.Call(call.op, [self.as_float(call.args[0])], call.attrs, call.ty_args))
        if v not in self.env:
            q = self.quant[v]
            self.env[v] = self.bb.emit(relax.op.dequantize(
                q.expr, relax.const(q.scale, "float32"), relax.const(q.zero, q.spec.dtype), out_dtype="float32"))
        return self.env[v]

    def as_quant(self, v: relax.Expr, spec: QuantSpec) -> QTensor | None:
        """``v`` as codes of ``spec``'s dtype: its own integer view, or quantized from its range."""
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

    def set_quant(self, v: relax.Var, expr: relax.Expr, scale: float, zero: int, spec: QuantSpec) -> None:
        self.quant[v] = QTensor(self.bb.emit(expr), scale, zero, spec)

    def output_params(self, v: relax.Var, spec: QuantSpec, act: Activation) -> tuple[float, int, int, object]:
        scale, zero = (float(a) for a in spec.qparams(*self.ranges[v]))
        return (scale, int(zero), *act.codes(scale, int(zero), spec))

    def is_output(self, var: relax.Var) -> bool:
        """Whether ``var`` is only used as a model output."""
        return var in self.uses and self.uses[var] == 1 and self.consumer.get(var, 0) is None

    # ---- fusion ---------------------------------------------------------------------------------
    def activation_after(self, var: relax.Var) -> Activation:
        """The relu/clip (+ per-channel minimum) that alone consumes ``var``, if any."""
        act = Activation()
        first = single_consumer(var, self.uses, self.consumer, ("relax.nn.relu", "relax.clip"))
        if first is None:
            return act
        act.vars.append(first.var)
        if op_name(first.value) == "relax.clip":
            act.lo, act.hi = float(first.value.args[1].value), float(first.value.args[2].value)
            return act
        act.lo = 0.0
        cap = single_consumer(first.var, self.uses, self.consumer, ("relax.minimum",))
        if cap is not None and cap.value.args[0].same_as(first.var) and isinstance(cap.value.args[1], Const):
            act.vars.append(cap.var)
            act.hi = _const_array(cap.value.args[1]).reshape(-1)
        return act

    def bias_after(self, var: relax.Var, channels: int) -> tuple[relax.Var | None, np.ndarray | None]:
        binding = single_consumer(var, self.uses, self.consumer, ("relax.add",))
        if binding is None:
            return None, None
        lhs, rhs = binding.value.args
        bias = _const_array(rhs if lhs.same_as(var) else lhs)
        return (binding.var, bias.reshape(-1)) if bias is not None and bias.size == channels else (None, None)

    # ---- handlers ---------------------------------------------------------------------------------
    def weighted_layer(self, binding) -> bool:
        call, spec = binding.value, self.scheme.activations
        conv = op_name(call) == "relax.nn.conv2d"
        if conv and (call.attrs.data_layout != "NCHW" or call.attrs.kernel_layout != "OIHW"):
            return False
        x, weight = call.args[0], _const_array(call.args[1])
        out_axis, w_axis = (1, 0) if conv else (-1, 1)
        channels = _shape(binding.var)[out_axis]
        chain = [binding.var]
        bias_var, bias = self.bias_after(binding.var, channels)
        if bias_var is not None:
            chain.append(bias_var)
        act = self.activation_after(chain[-1])
        chain += act.vars
        xq = self.as_quant(x, spec)
        if xq is None or (chain[-1] not in self.ranges and not self.is_output(chain[-1])):
            return False
        chosen, chosen_scale = self.weights.get(binding.var, (None, None))
        w_scale = self.scheme.weight_qparams(weight, w_axis)[0] if chosen is None else chosen_scale
        fitted = w_scale if bias is None else _bias_fitting(w_scale, bias, xq.scale)
        codes = self.scheme.weights.quantize(weight, _along(fitted, weight.ndim, w_axis), 0).astype("int8")
        if chosen is not None:  # the chosen codes, except where the bias forced a larger scale
            codes = np.where(_along(np.asarray(fitted) == np.asarray(w_scale), weight.ndim, w_axis), chosen,
                             codes).astype("int8")
        w_scale = fitted
        if self.means is not None and x in self.means:
            groups = int(call.attrs.groups) if conv else 1
            error = codes * _along(w_scale, weight.ndim, w_axis) - weight
            bias = (np.zeros(channels) if bias is None else bias) - _weight_error_shift(error, self.means[x], w_axis,
                                                                                        groups)
        if binding.var in self.shifts:
            bias = (np.zeros(channels) if bias is None else bias) - self.shifts[binding.var]
        self.layers[binding.var] = {"x": xq, "codes": codes, "w_scale": w_scale, "bias": bias, "chain": chain}
        if self.is_output(chain[-1]):  # keep the exact int32 result: no 8-bit clip of model outputs
            self.env[chain[-1]] = self.bb.emit(integer_layer(call, xq, codes, w_scale, bias, act,
                                                             self.scheme.integer_only))
        else:
            scale, zero, lo, hi = self.output_params(chain[-1], spec, act)
            out = QOutput(scale, zero, lo, hi, spec.dtype)
            self.set_quant(chain[-1], integer_layer(call, xq, codes, w_scale, bias, out, self.scheme.integer_only),
                           scale, zero, spec)
        self.consumed.update(chain)
        return True

    def activation_matmul(self, binding) -> bool:
        call, spec = binding.value, self.scheme.activations
        operand = QuantSpec(spec.bits, symmetric=True, power_of_two=spec.power_of_two)
        a, b = (self.as_quant(arg, operand) for arg in call.args[:2])
        act = self.activation_after(binding.var)
        final = act.vars[-1] if act.vars else binding.var
        if a is None or b is None or final not in self.ranges:
            return False
        acc = relax.op.matmul(a.expr, b.expr, out_dtype="int32")
        self.layers[binding.var] = {"a": a, "b": b, "chain": [binding.var, *act.vars]}
        scale, zero, lo, hi = self.output_params(final, spec, act)
        rq = Requant(np.array([a.scale * b.scale / scale]), zero, lo, hi, spec.dtype, self.scheme.integer_only)
        self.set_quant(final, requantize(acc, rq, len(_shape(binding.var)), -1), scale, zero, spec)
        self.consumed.update([binding.var, *act.vars])
        return True

    def merge(self, binding, inputs: list, combine: Callable[[list], relax.Expr]) -> bool:
        """Residual add / concat: rescale each input to the output's scale, combine, finish."""
        spec, integer_only = self.scheme.activations, self.scheme.integer_only
        qs = [self.quant.get(v) or self.as_quant(v, spec) for v in inputs]
        act = self.activation_after(binding.var)
        final = act.vars[-1] if act.vars else binding.var
        if any(q is None for q in qs) or final not in self.ranges or self.is_output(final):
            return False  # a model output is combined in float: one scale would cost its small parts
        scale, zero, lo, hi = self.output_params(final, spec, act)
        out = QOutput(scale, zero, lo, hi, spec.dtype)
        self.set_quant(final, integer_merge(qs, out, combine, len(_shape(binding.var)), integer_only),
                       scale, zero, spec)
        self.consumed.update([binding.var, *act.vars])
        return True

    def integer_unary(self, binding) -> bool:
        """Ops applied directly to codes: shape ops, max pooling, relu/clip, global average."""
        call = binding.value
        q = self.quant.get(call.args[0]) if isinstance(call.args[0], relax.Var) else None
        op = op_name(call)
        if q is None:
            return False
        if op == "relax.split":  # its parts are codes of the same scale (see visit)
            parts = self.bb.emit(relax.Call(call.op, [q.expr, *call.args[1:]], call.attrs, call.ty_args))
            self.splits[binding.var] = (parts, q, call)
            return True
        if op in SHAPE_OPS:
            expr = relax.Call(call.op, [q.expr, *call.args[1:]], call.attrs, call.ty_args)
        elif op in ("relax.nn.relu", "relax.clip"):
            act = Activation(lo=0.0) if op == "relax.nn.relu" else \
                Activation(lo=float(call.args[1].value), hi=float(call.args[2].value))
            lo, hi = act.codes(q.scale, q.zero, q.spec)
            expr = relax.op.clip(q.expr, lo, hi)
        elif op == "relax.mean" and _is_spatial(call):  # global average pooling, to its own calibrated range
            scale, zero = self.own_params(binding.var, q)
            out = QOutput(scale, zero, q.spec.qmin, q.spec.qmax, q.spec.dtype)
            expr = integer_mean(q, call, out, self.scheme.integer_only)
            self.set_quant(binding.var, expr, scale, zero, q.spec)
            return True
        elif op == "relax.image.resize2d" and call.attrs.method == "nearest_neighbor":
            expr = relax.Call(call.op, [q.expr, *call.args[1:]], call.attrs, call.ty_args)
        elif op == "relax.image.resize2d" and resize.supported(call):  # bilinear: fixed-point taps, int32
            rq = Requant(np.array([2.0 ** (-2 * resize.FRACTION_BITS)], np.float32), q.zero, q.spec.qmin,
                         q.spec.qmax, q.spec.dtype, self.scheme.integer_only)
            expr = requantize(resize.bilinear_accumulate(centred(q), call), rq, 4, 1)
        elif op in ("relax.nn.avg_pool2d", "relax.image.resize2d"):  # averages of codes, same scale
            shifted = relax.op.subtract(relax.op.astype(q.expr, "float32"), relax.const(np.float32(q.zero)))
            pooled = relax.Call(call.op, [shifted, *call.args[1:]], call.attrs, call.ty_args)
            expr = finish(pooled, q.zero, q.spec.qmin, q.spec.qmax, q.spec.dtype, integer_only=False)
        else:
            return False
        self.set_quant(binding.var, expr, q.scale, q.zero, q.spec)
        return True

    def own_params(self, var: relax.Var, q: QTensor) -> tuple[float, int]:
        """Scale and zero point from ``var``'s calibrated range, else those of ``q``."""
        if var not in self.ranges:
            return q.scale, q.zero
        scale, zero = (float(a) for a in q.spec.qparams(*self.ranges[var]))
        return scale, int(zero)

    def lookup_table(self, binding) -> bool:
        """An element-wise region of one integer value (an activation) as a 256-entry table."""
        start = next((a for a in binding.value.args if isinstance(a, relax.Var) and a in self.quant), None)
        found = None if start is None else lut.region_after(start, self.order[self.position:], self.uses)
        if found is None or found[1] not in self.ranges or self.is_output(found[1]):
            return False
        members, sink = found
        q, spec = self.quant[start], self.scheme.activations
        scale, zero = (float(a) for a in spec.qparams(*self.ranges[sink]))
        codes = np.arange(q.spec.qmin, q.spec.qmax + 1)
        out = lut.table(members, start, codes, q.scale, q.zero, scale, int(zero), spec.qmin, spec.qmax)
        if out is None:
            return False
        index = relax.op.astype(q.expr, "int32")
        if q.spec.qmin:
            index = relax.op.subtract(index, relax.const(np.int32(q.spec.qmin), "int32"))
        self.set_quant(sink, relax.op.take(relax.const(out.astype(spec.dtype)), index, axis=0), scale, int(zero), spec)
        self.consumed.update(b.var for b in members)
        return True

    def product(self, binding) -> bool:
        """``a · b`` of two integer values (a squeeze-excitation gate): int32 product, requantized."""
        spec, integer_only = self.scheme.activations, self.scheme.integer_only
        qs = [self.quant.get(v) or self.as_quant(v, spec) for v in binding.value.args[:2]]
        act = self.activation_after(binding.var)
        final = act.vars[-1] if act.vars else binding.var
        if any(q is None for q in qs) or final not in self.ranges or self.is_output(final):
            return False
        scale, zero, lo, hi = self.output_params(final, spec, act)
        ndim = len(_shape(binding.var))
        product = relax.op.multiply(centred(qs[0]), centred(qs[1]))
        scaled = rescale(product, np.array([qs[0].scale * qs[1].scale / scale]), ndim, 1, integer_only)
        self.set_quant(final, finish(scaled, zero, lo, hi, spec.dtype, integer_only, ndim, 1), scale, zero, spec)
        self.consumed.update([binding.var, *act.vars])
        return True

    def affine(self, binding) -> bool:
        """``x · a + b`` with per-channel constants (an unfolded BatchNorm): one requantization."""
        call, spec, integer_only = binding.value, self.scheme.activations, self.scheme.integer_only
        x = next((a for a in call.args if isinstance(a, relax.Var)), None)
        const = next((_const_array(a) for a in call.args if isinstance(a, Const)), None)
        q = self.quant.get(x)
        shape = _shape(binding.var)
        if q is None or const is None or len(shape) < 2 or not _per_channel(const, shape):
            return False
        channels = shape[1]
        gain, bias, chain = np.ones(channels), np.zeros(channels), [binding.var]
        if op_name(call) == "relax.multiply":
            gain = np.broadcast_to(const.reshape(-1), (channels,)).astype(np.float64)
            bias_var, found = self.bias_after(binding.var, channels)
            if bias_var is not None:
                bias, chain = found.astype(np.float64), chain + [bias_var]
        else:
            bias = np.broadcast_to(const.reshape(-1), (channels,)).astype(np.float64)
        act = self.activation_after(chain[-1])
        chain += act.vars
        if chain[-1] not in self.ranges or self.is_output(chain[-1]) or (integer_only and np.any(gain <= 0)):
            return False
        scale, zero, lo, hi = self.output_params(chain[-1], spec, act)
        ndim = len(shape)
        scaled = rescale(centred(q), np.float32(q.scale) * gain / np.float32(scale), ndim, 1, integer_only)
        offset = np.round(bias / scale).astype(np.int64) if integer_only else (bias / scale).astype(np.float32)
        scaled = relax.op.add(scaled, relax.const(_along(offset, ndim, 1)))
        self.set_quant(chain[-1], finish(scaled, zero, lo, hi, spec.dtype, integer_only, ndim, 1), scale, zero, spec)
        self.consumed.update(chain)
        return True

    def int8_io(self, binding) -> bool:
        """``quantize(op(dequantize(codes)))`` at once, so that the op's consumers see codes."""
        call, spec = binding.value, self.scheme.activations
        if not (isinstance(call.args[0], relax.Var) and call.args[0] in self.quant) or binding.var not in self.ranges \
                or self.is_output(binding.var):
            return False
        self.env[binding.var] = self.bb.emit(relax.Call(call.op, [self.as_float(call.args[0]), *call.args[1:]],
                                                        call.attrs, call.ty_args))
        return self.as_quant(binding.var, spec) is not None

    def visit(self, binding, layer_index: int) -> None:
        call = binding.value
        op = op_name(call)
        done = False
        if isinstance(call, relax.TupleGetItem) and call.tuple_value in self.splits:
            parts, q, _ = self.splits[call.tuple_value]
            self.set_quant(binding.var, relax.TupleGetItem(parts, call.index), q.scale, q.zero, q.spec)
            return
        if op in LAYER_OPS:
            base, self.scheme = self.scheme, self.layer_schemes.get(layer_index, self.scheme)
            try:
                reason = self.keep_float(layer_index, call)
                if not reason:
                    done = self.weighted_layer(binding) if isinstance(call.args[1], Const) \
                        else op == "relax.matmul" and self.activation_matmul(binding)
                    reason = "" if done else "no calibrated range"
                self.records.append({"index": layer_index, "mode": self.scheme.name if done else "float",
                                     "reason": reason})
            finally:
                self.scheme = base
        elif op == "relax.add" and all(isinstance(a, relax.Var) for a in call.args):
            done = self.merge(binding, list(call.args[:2]), lambda t: relax.op.add(t[0], t[1]))
        elif op == "relax.multiply" and all(isinstance(a, relax.Var) for a in call.args) \
                and any(a in self.quant for a in call.args):
            done = self.lookup_table(binding) or self.product(binding)
        elif op in INT8_IO_OPS:
            done = self.int8_io(binding)
        elif op == "relax.concat":
            done = self.merge(binding, list(call.args[0].fields), lambda t: relax.op.concat(t, axis=int(call.attrs.axis)))
        elif op:
            done = self.integer_unary(binding)
            if not done and (op in lut.UNARY or op in lut.BINARY):
                done = self.lookup_table(binding)
            if not done and op in ("relax.multiply", "relax.add"):
                done = self.affine(binding)
        if not done:
            new = relax.Call(call.op, [self.as_float(a) for a in call.args], call.attrs, call.ty_args) \
                if isinstance(call, relax.Call) else self.as_float(call)
            self.env[binding.var] = self.bb.emit(new)


def realize_function(func: relax.Function, scheme: Scheme, ranges: dict, keep_float: Callable[[int, relax.Call], str],
                     means: dict | None = None,
                     layer_schemes: dict[int, Scheme] | None = None, weights: dict | None = None,
                     shifts: dict | None = None) -> tuple[relax.Function, list[dict]]:
    """Rewrite one Relax function into the integer IR; returns it and per-layer records.

    ``means`` (per-channel input means from calibration) turns on bias correction;
    ``layer_schemes`` gives some layers (by index) a scheme of their own (mixed precision);
    ``weights`` (``{layer var: (codes, per-channel scales)}``) replace a layer's nearest rounding
    (learned rounding, weight clipping) and ``shifts`` (``{layer var: per-channel output
    shift}``) are subtracted from those layers' biases (per-layer bias correction).
    """
    new, walk = realize_walk(func, scheme, ranges, keep_float, means, layer_schemes, weights, shifts)
    return new, walk.records


def realize_walk(func: relax.Function, scheme: Scheme, ranges: dict, keep_float: Callable[[int, relax.Call], str],
                 means: dict | None = None,
                 layer_schemes: dict[int, Scheme] | None = None, weights: dict | None = None,
                 shifts: dict | None = None) -> tuple[relax.Function, _Walk]:
    """:func:`realize_function`, returning the walk itself: ``quant`` (each original var held in
    integers and its codes' scale and zero point; those made from a float value are also in
    ``views``), ``layers`` (codes, scales, bias and chain of each integer layer), ``consumed``
    and ``records``. Exporters (``compiler.onnx_export``) read Squeeze's decisions from it.
    """
    uses, consumer = use_counts(func)
    walk = _Walk(scheme, ranges, keep_float, uses, consumer, means, layer_schemes=dict(layer_schemes or {}),
                 weights=dict(weights or {}), shifts=dict(shifts or {}))
    params = user_inputs(func)
    with walk.bb.function("main", params, attrs=dict(func.attrs) if func.attrs else None):
        with walk.bb.dataflow():
            walk.env.update({p: p for p in params})
            layer_index = 0
            walk.order = bindings(func)
            for walk.position, binding in enumerate(walk.order):
                if binding.var not in walk.consumed:
                    walk.visit(binding, layer_index)
                layer_index += op_name(binding.value) in LAYER_OPS
            out = walk.bb.emit_output(walk.as_float(func.body.body))
        walk.bb.emit_func_output(out)
    return walk.bb.get()["main"], walk
