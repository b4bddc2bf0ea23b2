"""Relax rewrite: integer layers VTA can run → calls of the VTA runtime, the rest left to the CPU.

A layer is offloaded with its whole epilogue: ``conv2d``/``matmul`` (int8 × constant int8 →
int32), then element-wise ops with constant operands (bias ``add``, the shift-only
requantization's rounding ``add`` and ``right_shift``, ``maximum``/``minimum`` of ReLU and clip,
``astype`` between int32 and int64) up to the ``astype`` to int8 the accumulator buffer's
truncating STORE implements. The int64 steps of the integer IR run in VTA's int32 ALU only
when interval arithmetic over the layer's weights shows no intermediate can leave int32.

Each offloaded layer becomes a ``call_tir`` of a PrimFunc that calls the packed function
``squeeze.vta.run`` (:mod:`.runtime`) with the input and the layer's constants: the instruction
stream, the DRAM image (micro-ops, packed weights, epilogue vectors) and a small header. The
PrimFunc's block carries the integer-kernel annotations, so ``squeeze inspect`` lists the layer on
``int8 vta conv2d``. What stays on the CPU is told with its reason on stderr and recorded in
``main``'s ``squeeze.vta`` attribute.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from compiler.ir import layer_kind

from ..integer.kernels import KERNEL_ATTR, MACS_ATTR, ConvShape
from ..integer.legalize import _const, _shape, conv_layer
from ..schedules import RULE_ATTR
from .config import Board, VTAConfig
from .lower import IMM_MAX, IMM_MIN, Step, Unfit, VTAProgram, lower_conv
from .runtime import FUNC_NAME, header

INT32 = (-(1 << 31), (1 << 31) - 1)
MIN_EFFICIENCY = 0.25  # below this share of useful MACs in the padded GEMMs a layer stays on the CPU
OP_PATTERN_OPAQUE = 8
_SHIFTS = {"relax.right_shift": 1, "relax.left_shift": -1}


@dataclass
class Decision:
    layer: str
    kind: str
    shape: str
    where: str  # "vta" or "cpu"
    reason: str = ""
    tiling: str = ""

    def line(self) -> str:
        return f"vta: {self.layer} ({self.kind} {self.shape}) " + (
            f"on VTA, {self.tiling}" if self.where == "vta" else f"stays on the CPU: {self.reason}")


def _per_channel(value: np.ndarray, out_shape: tuple[int, ...], axis: int) -> np.ndarray | int | None:
    """``value`` broadcast to the layer's output as one number per channel (``axis``), a scalar
    when all are equal, or None when it varies along other axes."""
    try:
        full = np.broadcast_to(value, out_shape).astype(np.int64)
    except ValueError:
        return None
    lead = np.moveaxis(full, axis, 0).reshape(out_shape[axis], -1)
    if not np.all(lead == lead[:, :1]):
        return None
    vec = lead[:, 0]
    return int(vec[0]) if np.all(vec == vec[0]) else vec


def _epilogue(ops: list[relax.Call], out_shape: tuple[int, ...], axis: int) -> list[Step] | str:
    """The ALU steps of the element-wise chain ``ops`` (the reason as a string if one is not)."""
    steps: list[Step] = []
    for call in ops:
        name = call.op.name
        if name == "relax.astype":
            if str(call.attrs.dtype) not in ("int32", "int64"):
                return f"an astype to {call.attrs.dtype} inside the epilogue"
            continue
        value = _const(call.args[1]) if len(call.args) > 1 else None
        if value is None or not np.issubdtype(value.dtype, np.integer):
            return f"{name.removeprefix('relax.')} with a non-constant operand"
        value = _per_channel(value, out_shape, axis)
        if value is None:
            return f"{name.removeprefix('relax.')} by a tensor that is not per channel"
        if name in ("relax.add", "relax.subtract"):
            step = Step("add", value if name == "relax.add" else -value)
        elif name in _SHIFTS:
            step = Step("shr", _SHIFTS[name] * value)
        elif name in ("relax.maximum", "relax.minimum"):
            step = Step(name[6:9], value)
        else:
            return f"{name.removeprefix('relax.')} (VTA's ALU has ADD, MAX, MIN, SHR)"
        steps.append(step)
    return _merge(steps)


def _merge(steps: list[Step]) -> list[Step]:
    """Consecutive additions as one, zero additions dropped, out-of-range immediates as vectors."""
    merged: list[Step] = []
    for s in steps:
        if merged and s.op == "add" and merged[-1].op == "add":
            total = np.asarray(merged[-1].value, np.int64) + np.asarray(s.value, np.int64)
            merged[-1] = Step("add", total if total.ndim else int(total))
        else:
            merged.append(s)
    out = []
    for s in merged:
        if s.op == "add" and not s.vector and s.value == 0:
            continue
        out.append(s)
    return out


def _vectors_for_range(steps: list[Step], channels: int) -> list[Step]:
    return [Step(s.op, np.full(channels, s.value, np.int64)) if not s.vector and not IMM_MIN <= s.value <= IMM_MAX
            else s for s in steps]


def _fits_int32(weight: np.ndarray, steps: list[Step]) -> str:
    """'' if no accumulator or epilogue value can leave int32 (int8 inputs), else why."""
    w = weight.astype(np.int64).reshape(weight.shape[0], -1)
    hi = np.maximum(w * 127, w * -128).sum(axis=1)
    lo = np.minimum(w * 127, w * -128).sum(axis=1)
    for s in [None, *steps]:
        if s is not None:
            v = np.asarray(s.value, np.int64)
            if s.op == "add":
                lo, hi = lo + v, hi + v
            elif s.op == "shr":
                lo, hi = np.where(v >= 0, lo >> np.maximum(v, 0), lo << np.maximum(-v, 0)), \
                    np.where(v >= 0, hi >> np.maximum(v, 0), hi << np.maximum(-v, 0))
            elif s.op == "max":
                lo, hi = np.maximum(lo, v), np.maximum(hi, v)
            else:
                lo, hi = np.minimum(lo, v), np.minimum(hi, v)
        if lo.min() < INT32[0] or hi.max() > INT32[1]:
            return "its int32 accumulators or epilogue could overflow (VTA's ALU is 32-bit)"
    return ""


def vta_kernel(program: VTAProgram, in_shape: tuple[int, ...], in_dtype: str, out_shape: tuple[int, ...],
               kind: str) -> tirx.PrimFunc:
    """The PrimFunc calling ``squeeze.vta.run`` for ``program``, annotated as an integer kernel."""
    data = te.placeholder(in_shape, in_dtype, name="data")
    consts = [te.placeholder((program.stream.size,), "uint8", name="stream"),
              te.placeholder((program.dram.size,), "uint8", name="dram"),
              te.placeholder((len(program.header),), "int32", name="header")]
    out = te.extern([out_shape], [data, *consts],
                    lambda ins, outs: tirx.call_packed(FUNC_NAME, *ins, outs[0]), name="vta", dtype="int8")
    # a copy stage after the call: TVM's layout-rewrite split wants a compute block in every kernel
    copy = te.compute(out_shape, lambda *i: out(*i), name="vta_out")
    func = te.create_prim_func([data, *consts, copy]).without_attr("global_symbol")
    sch = s_tir.Schedule(func)
    block = sch.get_sblock("vta")
    sch.annotate(block, KERNEL_ATTR, f"vta {kind}")
    sch.annotate(block, MACS_ATTR, program.macs)
    t = program.tiling
    return sch.mod["main"].with_attrs({"tirx.is_scheduled": True, RULE_ATTR: "vta",
                                       "op_pattern": OP_PATTERN_OPAQUE,
                                       "squeeze.vta.tiling": f"oc {t.oc_t} ic {t.ic_t} rows {t.rows}"})


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, cfg: VTAConfig, board: Board):
        super().__init__(mod)
        self.cfg, self.board = cfg, board
        self.layers: list[relax.Call] = []  # every integer layer seen, in order (as visited)
        self.offloaded: list[tuple[relax.Call, Decision]] = []

    def _chain(self, end: relax.Call) -> tuple[relax.Call, list[relax.Call]] | None:
        """The layer and the element-wise ops between it and ``end`` (the astype to int8)."""
        ops, cur = [], end.args[0]
        while isinstance(cur, relax.Var):
            value = self.lookup_binding(cur)
            if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
                return None
            if layer_kind(value):
                return value, ops[::-1]
            if value.op.name not in ("relax.add", "relax.subtract", "relax.right_shift", "relax.left_shift",
                                     "relax.maximum", "relax.minimum", "relax.astype", "relax.multiply"):
                return None
            ops.append(value)
            cur = value.args[0]
        return None

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = self.visit_expr_post_order(call)
        if layer_kind(call):
            self.layers.append(call)
            return call
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.astype"
                and str(call.attrs.dtype) == "int8"):
            return call
        found = self._chain(call)
        if found is None:
            return call
        layer, ops = found
        result = self._offload(layer, ops, layer_kind(layer))
        if isinstance(result, Decision):
            self.offloaded.append((layer, result))
            return call
        expr, decision = result
        self.offloaded.append((layer, decision))
        return expr

    def report(self, names: list[str]) -> list[Decision]:
        """One decision per integer layer, in order, named as ``inspect`` names them."""
        out = []
        for i, layer in enumerate(self.layers):
            decision = next((d for l, d in self.offloaded if l.same_as(layer)), None)
            if decision is None:
                shape = "x".join(map(str, _shape(layer) or ()))
                decision = Decision("", layer_kind(layer), shape, "cpu",
                                    "its int32 result is not requantized to int8 by shifts (VTA stores 8-bit "
                                    "outputs only)")
            decision.layer = names[i] if i < len(names) else f"{decision.kind}_{i}"
            out.append(decision)
        return out

    def _geometry(self, layer: relax.Call, kind: str):
        """``(data, data layout, ConvShape, OIHW weight, output axis of channels)`` or a reason."""
        if str(getattr(layer.args[0].ty, "dtype", "")) != "int8" or str(layer.attrs.out_dtype) != "int32":
            return "not int8 x int8 -> int32 (VTA's GEMM core is signed 8-bit)"
        weight = _const(layer.args[1])
        if weight is None or str(weight.dtype) != "int8":
            return "its weights are not a constant int8 tensor"
        if _shape(layer.args[0]) is None:
            return "dynamic input shape"
        if kind == "matmul":
            dims = _shape(layer.args[0])
            if weight.ndim != 2 or len(dims) != 2:
                return "a batched matmul (only [M, K] x [K, N] dense layers lower to GEMM)"
            m, k = dims
            shape = ConvShape(1, 1, m, k, weight.shape[1], 1, 1)
            return layer.args[0], "MK", shape, np.ascontiguousarray(weight.T)[:, :, None, None], -1
        if kind != "conv2d":
            return f"{kind} (VTA's GEMM core reduces over whole channel blocks)"
        found = conv_layer(self, layer)
        if found is None:
            return "a conv2d layout other than NCHW / NHWC"
        data, layout, pad_value, weight, shape = found
        if pad_value != 0:
            return f"padding with {pad_value} (VTA's loads pad with zeros)"
        return data, layout, shape, weight, str(layer.attrs.out_layout).index("C")

    def _offload(self, layer: relax.Call, ops: list[relax.Call], kind: str):
        geometry = self._geometry(layer, kind)
        out_shape = _shape(layer)
        desc = "x".join(map(str, out_shape or ()))
        if isinstance(geometry, str):
            return Decision("", kind, desc, "cpu", geometry)
        data, layout, shape, weight, axis = geometry
        cfg = self.cfg
        padded_in = -(-shape.in_channels // cfg.block) * cfg.block
        padded_out = -(-shape.out_channels // cfg.block) * cfg.block
        efficiency = shape.in_channels * shape.out_channels / (padded_in * padded_out)
        if efficiency < MIN_EFFICIENCY:
            return Decision("", kind, desc, "cpu", f"{shape.in_channels} input / {shape.out_channels} output channels "
                            f"use {100 * efficiency:.0f} % of the {cfg.block}x{cfg.block} GEMM blocks: it does not pay")
        steps = _epilogue(ops, out_shape, axis)
        if isinstance(steps, str):
            return Decision("", kind, desc, "cpu", steps)
        steps = _vectors_for_range(steps, shape.out_channels)
        overflow = _fits_int32(weight, steps)
        if overflow:
            return Decision("", kind, desc, "cpu", overflow)
        try:
            program = lower_conv(shape, weight, steps, cfg, self.board)
        except Unfit as err:
            return Decision("", kind, desc, "cpu", f"does not fit the on-chip buffers: {err}")
        program.header = header(program, layout, str(layer.attrs.out_layout) if kind == "conv2d" else "MK", self.board)
        func = vta_kernel(program, _shape(data), "int8", out_shape, kind)
        gvar = self.builder_.add_func(func, f"vta_{kind}")
        args = [data, relax.const(program.stream), relax.const(program.dram), relax.const(program.header)]
        t = program.tiling
        decision = Decision("", kind, desc, "vta", tiling=f"tiles of {t.oc_t} channel blocks x {t.rows} rows, "
                            f"{t.ic_t} input blocks per load, {sum(program.counts.values())} instructions")
        return relax.call_tir(gvar, args, relax.TensorType(out_shape, "int8")), decision


def vta_layers(cfg: VTAConfig, board: Board, quiet: bool = False) -> tvm.transform.Pass:
    """Module pass offloading the integer layers VTA (``cfg``, cycle model of ``board``) can run;
    the others stay as they are (for the CPU target's own integer legalization after it)."""

    @tvm.transform.module_pass(opt_level=0, name="squeeze.vta_layers")
    def transform(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        records = {}
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                rewriter = _Rewriter(mod, cfg, board)
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
                updated = rewriter.builder_.get()
                names = [str(n) for n in (func.attrs or {}).get("squeeze.layer_names", [])]
                records[gvar.name_hint] = rewriter.report(names)
                mod = updated
        for name, decisions in records.items():
            if not quiet:
                for d in decisions:
                    print(d.line(), file=sys.stderr)
            gvar = mod.get_global_var(name)
            mod[gvar] = mod[gvar].with_attr("squeeze.vta", json.dumps([d.__dict__ for d in decisions]))
        return relax.transform.DeadCodeElimination()(mod)

    return transform
