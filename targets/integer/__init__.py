"""The shared integer kernel library: integer conv2d / grouped / depthwise / matmul for any
registered dot-product ISA (:mod:`.isa`).

``legalize`` rewrites the integer layers a target declares into calls of packed kernels
(:mod:`.legalize`, :mod:`.kernels`), ``schedule`` gives them register-tiled, tensorized
schedules with the epilogue fused (:mod:`.schedule`), and :mod:`.tuning` is their
MetaSchedule space. A CPU target supplies only its :class:`~.isa.DotISA` descriptions and
tensor intrinsics (see targets/README.md).
"""
from __future__ import annotations

from typing import Callable, Iterable

import tvm
from tvm import s_tir, tirx

from compiler.ir import LAYER_KINDS

from ..base import OpSupport
from ..schedules import RULE_ATTR
from ..schedules.common import vector_isa
from .isa import DotISA, dot_desc, get_isa, isa_for, register_isa, select_isa
from .bitserial_legalize import BitSerialRule, BitSerialSupport, integer_kernels
from .bitserial_schedule import schedule_bitserial
from .legalize import int8_kernels
from .schedule import schedule_int8, schedule_window_sum
from .tuning import search_strategy  # also registers the MetaSchedule custom rule

FuncSchedule = Callable[[tirx.PrimFunc, tvm.target.Target], "s_tir.Schedule | None"]


def support(isa: DotISA, ops: Iterable[str] = LAYER_KINDS, native: Iterable[DotISA] = ()) -> tuple[OpSupport, ...]:
    """OpSupport entries of the integer kernels for ``isa`` and then for each ISA of ``native``
    (see :func:`legalize`): what the quantizer and the legalization ask, and what ``squeeze
    targets`` shows."""
    ops = tuple(ops)
    return tuple(entry for one in (isa, *native) for entry in _support(one, ops))


def _support(isa: DotISA, ops: tuple[str, ...]) -> tuple[OpSupport, ...]:
    dtypes = (isa.act_dtype, f"int{isa.weight_bits}", "int32")
    offset = f" (+{isa.weight_offset})" if isa.weight_offset else ""
    stored = f"{isa.weight_dtype}{offset}" + (f", {8 // isa.weight_bits} per byte" if isa.sub_byte else "")
    packed = f"weights [G,OC/{isa.lanes},KH,KW,IC/{isa.group},{isa.lanes},{isa.group}] {stored}"
    epilogue = "+bias/requantize/relu/clip/residual fused"
    table = {
        "conv2d": OpSupport("conv2d", dtypes, f"NHWC, {packed}", f"{isa.instruction} direct conv {epilogue}"),
        "grouped_conv2d": OpSupport("grouped_conv2d", dtypes, "NHWC, per-group packing",
                                    f"{isa.instruction} direct conv"),
        "depthwise_conv2d": OpSupport("depthwise_conv2d", dtypes, "NHWC, weights [KH,KW,C] float32/int32"
                                      + (", stride 1: [R,KW,KH/4,C,4] int8" if isa.lanewise else ""),
                                      (f"{isa.instruction} on row quads at stride 1, else " if isa.lanewise else "")
                                      + f"vectorized direct conv {epilogue}"),
        "matmul": OpSupport("matmul", dtypes,
                            f"weights [N/{isa.lanes},K/{isa.group},{isa.lanes},{isa.group}] {stored}",
                            f"{isa.instruction} GEMM {epilogue}"),
    }
    return tuple(table[op] for op in ops if not (isa.sub_byte and op == "depthwise_conv2d"))  # depthwise: no dot


def legalize(isa: DotISA, ops: Iterable[str], native: Iterable[DotISA] = (),
             bitserial: BitSerialSupport | None = None) -> Callable[[tvm.target.Target], tvm.transform.Pass]:
    """``TargetSpec.legalize`` hook: the layers of kinds ``ops`` into integer kernels.

    Parameters
    ----------
    isa : DotISA
        The default ISA; activations of another dtype are shifted by 128 into its ``act_dtype``.
    ops : iterable of str
        Layer kinds (``compiler.ir.LAYER_KINDS``) to rewrite.
    native : iterable of DotISA
        The target's ISAs for activations of their own ``act_dtype`` (``udot`` for uint8
        beside ``sdot``), see :func:`.isa.isa_for`.
    bitserial : BitSerialSupport, optional
        Where the target's bit-serial kernels beat ``isa``'s (:mod:`.bitserial_legalize`).
    """
    ops, native = frozenset(ops), tuple(native)
    if bitserial is None:
        return lambda _target: int8_kernels(isa, ops, native)
    return lambda target: integer_kernels(isa, ops, native, bitserial, vector_isa(target).bits)


def schedule_integer(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    """The schedule of a PrimFunc around an int8 or bit-serial kernel or a window sum (None if it
    holds none)."""
    for schedule_kind in (schedule_int8, schedule_bitserial, schedule_window_sum):
        sch = schedule_kind(func, target)
        if sch is not None:
            return sch
    return None


def schedule_func(fallback: FuncSchedule) -> FuncSchedule:
    """``TargetSpec.schedule_func``: the integer kernel schedule of a PrimFunc holding one,
    else ``fallback`` (the target's FP32 rules)."""

    def schedule(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
        sch = schedule_integer(func, target)
        return sch if sch is not None else fallback(func, target)

    return schedule


def schedule(fallback: Callable[[tvm.target.Target], tvm.transform.Pass]):
    """``TargetSpec.schedule``: integer kernels first, then the ``fallback`` module pass."""

    def make(target: tvm.target.Target) -> tvm.transform.Pass:
        rest = fallback(target)

        @tvm.transform.module_pass(opt_level=0, name="squeeze.int8_schedule")
        def _pass(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
            for gvar, func in list(mod.functions_items()):
                if isinstance(func, tirx.PrimFunc) and not (func.attrs or {}).get("tirx.is_scheduled", False):
                    sch = schedule_integer(func, target)
                    if sch is not None:
                        mod[gvar] = sch.mod["main"].with_attrs({"tirx.is_scheduled": True,
                                                                RULE_ATTR: "schedule_int8"})
            return rest(mod)

        return _pass

    return make


__all__ = ["BitSerialRule", "BitSerialSupport", "DotISA", "register_isa", "get_isa", "select_isa", "isa_for", "dot_desc", "support", "legalize", "schedule",
           "schedule_func", "search_strategy"]
