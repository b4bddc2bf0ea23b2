"""Relax rewrite: integer layers of few bits → the bit-serial kernels, where the target says they win.

The layer's activation bits come from the IR itself: the range of codes its input can hold
(:func:`code_range`: the clip of the producer's requantization, seen through layout ops),
its weight bits from the constant weights (:func:`.bitserial.weight_planes`). A layer goes
bit-serial when one of the target's :class:`BitSerialRule` takes its kind, plane pairs and
words per output; every other layer is left to the int8 kernels (:mod:`.legalize`), in the same pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from compiler.ir import layer_kind

from . import bitserial
from .legalize import _less, _Rewriter, _const, _shape

# ops that pass integer codes through unchanged (a subset of them, or reordered)
_PASS_THROUGH = {"relax.permute_dims", "relax.reshape", "relax.nn.max_pool2d", "relax.strided_slice",
                 "relax.squeeze", "relax.expand_dims", "relax.flatten", "relax.nn.relu"}


@dataclass(frozen=True)
class BitSerialRule:
    """Layers of kinds ``ops`` (``compiler.ir.LAYER_KINDS``) with at most ``max_plane_pairs``
    (activation bits × weight planes; each pair costs an AND + popcount + add per word) and at
    least ``min_words`` packed words reduced per output run bit-serial."""

    ops: tuple[str, ...]
    max_plane_pairs: int
    min_words: int = 1

    def __str__(self) -> str:
        return f"{'/'.join(self.ops)} of <= {self.max_plane_pairs} plane pairs, >= {self.min_words} words per output"


@dataclass(frozen=True)
class BitSerialSupport:
    """What a target declares about its bit-serial kernels: where they beat its int8 kernels.

    Attributes
    ----------
    rules : tuple of BitSerialRule
        A layer runs bit-serial when one rule takes it (measured crossovers, ``bench/lowbit.py``).
    word : int
        Widest word the planes are packed in (the popcount's lane; :func:`.bitserial.packing`).
    instruction : str
        The popcount instruction, for ``squeeze targets``.
    """

    rules: tuple[BitSerialRule, ...]
    word: int
    instruction: str

    def accepts(self, kind: str, plane_pairs: int, words: int) -> bool:
        """Whether a layer of ``kind`` with ``plane_pairs`` and ``words`` per output runs bit-serial."""
        return any(kind in r.ops and plane_pairs <= r.max_plane_pairs and words >= r.min_words for r in self.rules)

    def __str__(self) -> str:
        return "; ".join(map(str, self.rules))


def _dtype_range(dtype: str) -> tuple[float, float]:
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return -np.inf, np.inf


def _scalar(expr) -> float | None:
    """The value of a scalar constant or PrimValue argument, else None."""
    if isinstance(expr, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):
        return float(expr.value)
    const = _const(expr)
    return float(const) if const is not None and const.size == 1 else None


def value_range(expr: relax.Expr, lookup) -> tuple[float, float]:
    """Bounds of the values ``expr`` can hold, as far as its producers show: clips, maxima and
    minima with a scalar bound them, layout and pooling ops pass them through, a pad adds its
    value, ``R.quantize`` maps its input's bounds to codes (rounded outwards); the dtype's
    range bounds an integer tensor. ``lookup(var)`` is the value ``var`` is bound to (or None)."""
    lo, hi = _dtype_range(str(expr.ty.dtype))
    value = lookup(expr) if isinstance(expr, relax.Var) else None
    name = getattr(getattr(value, "op", None), "name", "")
    if name in _PASS_THROUGH or name in ("relax.astype", "relax.clip", "relax.maximum", "relax.minimum",
                                         "relax.nn.pad", "relax.quantize"):
        inner = value_range(value.args[0], lookup) if isinstance(value.args[0].ty, relax.TensorType) else (lo, hi)
        bound = next((_scalar(a) for a in value.args[1:] if _scalar(a) is not None), None)
        if name == "relax.clip":
            inner = (max(inner[0], _scalar(value.args[1])), min(inner[1], _scalar(value.args[2])))
        elif name == "relax.maximum" and bound is not None:
            inner = (max(inner[0], bound), max(inner[1], bound))
        elif name == "relax.minimum" and bound is not None:
            inner = (min(inner[0], bound), min(inner[1], bound))
        elif name == "relax.nn.pad":
            pad = float(value.attrs.pad_value)
            inner = (min(inner[0], pad), max(inner[1], pad))
        elif name == "relax.quantize":
            scale, zero = _scalar(value.args[1]), _scalar(value.args[2])
            inner = (np.floor(inner[0] / scale) + zero, np.ceil(inner[1] / scale) + zero) \
                if scale is not None and zero is not None else (lo, hi)
        elif name in ("relax.maximum", "relax.minimum"):
            inner = (lo, hi)  # against a tensor: unknown
        lo, hi = max(lo, inner[0]), min(hi, inner[1])
    return lo, hi


def code_range(expr: relax.Expr, lookup) -> tuple[int, int]:
    """:func:`value_range` of an integer tensor, as integers."""
    lo, hi = value_range(expr, lookup)
    return int(np.ceil(lo)), int(np.floor(hi))


@mutator
class _BitSerialRewriter(_Rewriter._cls):  # the class @mutator wrapped: its methods are overridable
    """The int8 rewriter, with the layers ``support`` accepts taken to the bit-serial kernels."""

    def __init__(self, mod: tvm.IRModule, isa, native, ops, support: BitSerialSupport, vector_bits: int):
        super().__init__(mod, isa, native, ops)
        self.support, self.vector_bits = support, vector_bits

    def _plan(self, call: relax.Call, data: relax.Expr, weight: np.ndarray, channels: int, taps: int,
              pad_value: int = 0):
        """(activation planes, weight planes, packing) if the layer goes bit-serial, else None:
        ``channels`` (per group) packed into words at each of ``taps`` kernel positions; the
        padding (``pad_value``) too must be one of the input's codes."""
        lo, hi = code_range(data, self.lookup_binding)
        if not lo <= pad_value <= hi:
            return None
        bits, signed = bitserial.code_bits(lo, hi)
        wplanes = bitserial.weight_planes(weight)
        pack = bitserial.packing(channels, self.support.word, self.vector_bits)
        words = taps * -(-channels // pack.word)
        if not (self.support.accepts(layer_kind(call), bits * wplanes.bits, words)
                and bitserial.accumulates(words, pack)):
            return None
        return bitserial.twos_complement(bits, signed), wplanes, pack

    def _conv2d(self, call: relax.Call) -> relax.Expr:
        layer = self._conv_layer(call)
        if layer is None:
            return call
        data, layout, pad_value, weight, shape = layer
        plan = None if shape.depthwise else self._plan(call, data, weight, shape.in_channels // shape.groups,
                                                       shape.kernel_h * shape.kernel_w, pad_value)
        if plan is None:
            return super()._conv2d(call)
        *planes, pack = plan
        func = bitserial.conv2d(shape, *planes, pack, str(data.ty.dtype), pad_value, layout)
        packed = bitserial.pack_conv_weight(weight, shape, planes[1], pack)
        out = self._kernel(func, f"bitserial_conv2d_{bitserial.bits_label(*planes)}", [data, relax.const(packed)],
                           (shape.batch, shape.out_height, shape.out_width, shape.out_channels))
        if planes[1].bipolar:  # w = 2b - 1: the kernel gave Σ x·2b
            out = _less(out, -planes[1].offset, self._window_sum(data, layout, shape, pad_value))
        return relax.op.permute_dims(out, [0, 3, 1, 2]) if str(call.attrs.data_layout) == "NCHW" else out

    def _matmul(self, call: relax.Call) -> relax.Expr:
        data, weight = call.args[0], _const(call.args[1])
        *batch, rows, k = _shape(data)
        plan = self._plan(call, data, weight, k, 1)
        if plan is None:
            return super()._matmul(call)
        *planes, pack = plan
        func = bitserial.matmul(tuple(batch), rows, k, weight.shape[1], *planes, pack, str(data.ty.dtype))
        packed = bitserial.pack_matmul_weight(weight, planes[1], pack)
        out = self._kernel(func, f"bitserial_matmul_{bitserial.bits_label(*planes)}", [data, relax.const(packed)],
                           (*batch, rows, weight.shape[1]))
        if planes[1].bipolar:
            out = _less(out, -planes[1].offset, relax.op.sum(relax.op.astype(data, "int32"), [-1], keepdims=True))
        return out


def integer_kernels(isa, ops: frozenset[str], native: tuple, support: BitSerialSupport,
                    vector_bits: int) -> tvm.transform.Pass:
    """Module pass: the layers ``support`` accepts into bit-serial kernels, the other integer
    layers of kinds ``ops`` into the int8 kernels (:func:`.legalize.int8_kernels`)."""

    @tvm.transform.module_pass(opt_level=0, name="squeeze.integer_kernels")
    def transform(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _BitSerialRewriter(mod, isa, native, ops, support, vector_bits)
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return transform
