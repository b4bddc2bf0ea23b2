"""Per-kernel profile of a compiled model: which kernel each fused layer runs, its time and GOP/s.

At compile time :func:`kernel_table` records, for each scheduled PrimFunc, the schedule that
produced it and the arithmetic it does; :func:`profile` then runs the model once through the
Relax VM with an instrument that times every kernel call in place, on the real intermediate
tensors, so each row's time is that kernel's own.
"""
from __future__ import annotations

import statistics
import time
from typing import Sequence

import tvm
from tvm import relax, tirx
from tvm.s_tir.stmt import SBlock

from targets.integer.bitserial import BITS_ATTR
from targets.integer.bitserial import KIND_ATTR as BITSERIAL_ATTR
from targets.integer.kernels import KERNEL_ATTR as KIND_ATTR
from targets.integer.kernels import MACS_ATTR
from targets.schedules import RULE_ATTR
from targets.sparse.rewrite import MACS_ATTR as SPARSE_MACS_ATTR
from targets.sparse.rewrite import SPARSE_ATTR


def _blocks(stmt) -> list:
    """Every SBlock under ``stmt`` (a small walker: TIR has no Python visitor here)."""
    found, stack = [], [stmt]
    while stack:
        node = stack.pop()
        if isinstance(node, SBlock):
            found.append(node)
        for field in ("body", "block", "init", "then_case", "else_case"):
            child = getattr(node, field, None)
            if isinstance(child, (tirx.Stmt, SBlock)):
                stack.append(child)
        stack.extend(getattr(node, "seq", []))
    return found


def _contraction(func: tirx.PrimFunc) -> tuple[int, str]:
    """Multiply-accumulates of ``func``'s main contraction and its integer-kernel kind ("" if none).

    Integer kernels carry both as block annotations (the kind ``int8 conv2d`` or
    ``bitserial a1wb conv2d``); otherwise the largest reduction block's iteration space counts.
    """
    macs = 0
    for block in _blocks(func.body):
        if KIND_ATTR in block.annotations:
            return int(block.annotations.get(MACS_ATTR, 0)), f"int8 {block.annotations[KIND_ATTR]}"
        if BITSERIAL_ATTR in block.annotations:
            kind = f"bitserial {block.annotations[BITS_ATTR]} {block.annotations[BITSERIAL_ATTR]}"
            return int(block.annotations.get(MACS_ATTR, 0)), kind
        if any(iv.iter_type == tirx.IterVar.CommReduce for iv in block.iter_vars):
            size = 1
            for iv in block.iter_vars:
                size *= int(iv.dom.extent)
            macs = max(macs, size)
    return macs, ""


def _weight_bytes(mod: tvm.IRModule) -> dict[str, int]:
    """Bytes of the constants each PrimFunc is called with in ``main`` (its weights, as stored)."""
    found: dict[str, int] = {}
    main = mod["main"] if any(g.name_hint == "main" for g in mod.get_global_vars()) else None
    for block in (main.body.blocks if isinstance(main, relax.Function) else ()):
        for binding in block.bindings:
            call = binding.value
            if isinstance(call, relax.Call) and getattr(call.op, "name", "") == "relax.call_tir":
                size = sum(a.value.numpy().nbytes for a in call.args[1].fields if isinstance(a, tvm.ir.expr.Constant))
                if size:
                    found[call.args[0].name_hint] = found.get(call.args[0].name_hint, 0) + size
    return found


def kernel_table(mod: tvm.IRModule) -> dict[str, dict]:
    """``{PrimFunc name: {"kernel": ..., "ops": 2·MACs[, "weight_bytes": ...]}}`` for a lowered,
    scheduled module (``weight_bytes``: the constants ``main`` passes it, e.g. packed bit-planes)."""
    weights = _weight_bytes(mod)
    table = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        attrs = func.attrs or {}
        rule = str(attrs[RULE_ATTR]) if RULE_ATTR in attrs else (
            "tuned" if attrs.get("tirx.is_scheduled", False) else "unscheduled")  # tuned: from a database
        macs, kind = _contraction(func)
        if kind:
            rule = kind + (" (tuned)" if rule == "tuned" else "")
        elif SPARSE_ATTR in attrs:  # written scheduled by targets.sparse (bsr, nm)
            rule, macs = f"sparse {attrs[SPARSE_ATTR]}", int(attrs[SPARSE_MACS_ATTR])
        table[gvar.name_hint] = {"kernel": rule, "ops": 2 * macs}
        if gvar.name_hint in weights:
            table[gvar.name_hint]["weight_bytes"] = weights[gvar.name_hint]
    return table


def profile(vm: relax.VirtualMachine, args: Sequence, kernels: dict[str, dict], number: int = 10,
            repeat: int = 5) -> list[dict]:
    """Time each kernel call of one ``main`` run; one row per call, in execution order.

    Each call is re-run ``number`` times per sample on its actual arguments (kernels are pure:
    they overwrite their outputs), and the median of ``repeat`` samples is kept.
    """
    rows: list[dict] = []

    def instrument(func, symbol: str, before_run: bool, _ret, *call_args) -> int:
        if before_run and symbol in kernels:
            samples = []
            for _ in range(repeat):
                start = time.perf_counter()
                for _ in range(number):
                    func(*call_args)
                samples.append((time.perf_counter() - start) / number)
            secs = statistics.median(samples)
            ops = kernels[symbol]["ops"]
            rows.append({"kernel": symbol, "schedule": kernels[symbol]["kernel"], "us": round(secs * 1e6, 1),
                         "gops": float(f"{ops / secs / 1e9:.3g}") if ops else None})
        return 0  # VMInstrumentReturnKind.NoOp

    vm.set_instrument(tvm.runtime.convert(instrument))
    try:
        vm["main"](*args)
    finally:
        vm.set_instrument(tvm.runtime.convert(lambda *_: 0))
    total = sum(r["us"] for r in rows) or 1.0
    for r in rows:
        r["share"] = f"{100 * r['us'] / total:.1f}%"
    return rows
