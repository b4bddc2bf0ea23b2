"""Relax rewrite: integer layers of few bits → the bit-serial kernels, where the target says they win.

The layer's activation bits come from the IR itself: the range of codes its input can hold
(:func:`code_range`: the clip of the producer's requantization, seen through layout ops),
its weight bits from the constant weights (:func:`.bitserial.weight_planes`). A layer goes
bit-serial when the target's :class:`BitSerialSupport` accepts its kind, bits and channel
count; every other layer is left to the int8 kernels (:mod:`.legalize`), in the same pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from compiler.ir import layer_kind

from . import bitserial
from .kernels import ConvShape
from .legalize import _Rewriter, _const, _shape, _to_oihw

# ops that pass integer codes through unchanged (a subset of them, or reordered)
_PASS_THROUGH = {"relax.permute_dims", "relax.reshape", "relax.nn.max_pool2d", "relax.strided_slice",
                 "relax.squeeze", "relax.expand_dims", "relax.flatten", "relax.nn.relu"}


@dataclass(frozen=True)
class BitSerialSupport:
    """What a target declares about its bit-serial kernels.

    Attributes
    ----------
    ops : tuple of str
        Layer kinds (``compiler.ir.LAYER_KINDS``) with a bit-serial kernel.
    max_plane_pairs : int
        Largest ``activation bits × weight planes`` for which bit-serial beats the int8 kernel
        (each plane pair costs one AND + popcount + add per word).
    min_channels : int
        Fewest reduction channels (per group) worth packing into words.
    word : int
        Widest word the planes are packed in (the popcount's lane; :func:`.bitserial.packing`).
    instruction : str
        The popcount instruction, for ``squeeze targets``.
    """

    ops: tuple[str, ...]
    max_plane_pairs: int
    min_channels: int
    word: int
    instruction: str

    def accepts(self, kind: str, act_bits: int, weight_planes: int, channels: int) -> bool:
        """Whether a layer of ``kind`` with these bits and reduction channels runs bit-serial."""
        return (kind in self.ops and act_bits * weight_planes <= self.max_plane_pairs
                and channels >= self.min_channels)


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

    def _planes(self, call: relax.Call, data: relax.Expr, weight: np.ndarray, channels: int):
        """(activation planes, weight planes) if the layer goes bit-serial, else None."""
        lo, hi = code_range(data, self.lookup_binding)
        bits, signed = bitserial.code_bits(lo, hi)
        wplanes = bitserial.weight_planes(weight)
        if not self.support.accepts(layer_kind(call), bits, wplanes.bits, channels):
            return None
        return bitserial.twos_complement(bits, signed), wplanes

    def _packing(self, channels: int, steps: int) -> bitserial.Packing | None:
        """The packing of a reduction over ``channels`` (per tap) × ``steps`` words, if the
        accumulators hold it."""
        pack = bitserial.packing(channels, self.support.word, self.vector_bits)
        words = -(-channels // pack.word)
        return pack if bitserial.accumulates(steps * words, pack) else None

    def _conv2d(self, call: relax.Call) -> relax.Expr:
        attrs = call.attrs
        if str(attrs.data_layout) not in ("NHWC", "NCHW") or str(attrs.out_layout) != str(attrs.data_layout):
            return call
        data, layout, padding, pad_value = self._conv_input(call)
        weight = _to_oihw(_const(call.args[1]), str(attrs.kernel_layout))
        dims = dict(zip(layout, _shape(data)))
        shape = ConvShape(dims["N"], dims["H"], dims["W"], dims["C"], weight.shape[0], weight.shape[2],
                          weight.shape[3], tuple(int(s) for s in attrs.strides), padding,
                          tuple(int(d) for d in attrs.dilation), int(attrs.groups))
        planes = None if shape.depthwise else self._planes(call, data, weight, shape.in_channels // shape.groups)
        if planes is None:
            return super()._conv2d(call)
        lo, hi = code_range(data, self.lookup_binding)
        if not lo <= pad_value <= hi:
            return super()._conv2d(call)
        pack = self._packing(shape.in_channels // shape.groups, shape.kernel_h * shape.kernel_w)
        if pack is None:
            return super()._conv2d(call)
        func = bitserial.conv2d(shape, *planes, pack, str(data.ty.dtype), pad_value, layout)
        packed = bitserial.pack_conv_weight(weight, shape, planes[1], pack)
        out = self._kernel(func, f"bitserial_conv2d_{bitserial.bits_label(*planes)}", [data, relax.const(packed)],
                           (shape.batch, shape.out_height, shape.out_width, shape.out_channels))
        return relax.op.permute_dims(out, [0, 3, 1, 2]) if str(attrs.data_layout) == "NCHW" else out

    def _matmul(self, call: relax.Call) -> relax.Expr:
        data, weight = call.args[0], _const(call.args[1])
        *batch, rows, k = _shape(data)
        planes = self._planes(call, data, weight, k)
        if planes is None:
            return super()._matmul(call)
        pack = self._packing(k, 1)
        if pack is None:
            return super()._matmul(call)
        func = bitserial.matmul(tuple(batch), rows, k, weight.shape[1], *planes, pack, str(data.ty.dtype))
        packed = bitserial.pack_matmul_weight(weight, planes[1], pack)
        return self._kernel(func, f"bitserial_matmul_{bitserial.bits_label(*planes)}", [data, relax.const(packed)],
                            (*batch, rows, weight.shape[1]))


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
