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
from .isa import DotISA, dot_desc, get_isa, register_isa, select_isa
from .legalize import int8_kernels
from .schedule import schedule_int8
from .tuning import search_strategy  # also registers the MetaSchedule custom rule

FuncSchedule = Callable[[tirx.PrimFunc, tvm.target.Target], "s_tir.Schedule | None"]


def support(isa: DotISA, ops: Iterable[str] = LAYER_KINDS) -> tuple[OpSupport, ...]:
    """OpSupport entries of the integer kernels for ``isa`` (what the quantizer and the
    legalization ask, and what ``squeeze targets`` shows)."""
    dtypes = (isa.act_dtype, "int8", "int32")
    packed = f"weights [G,OC/{isa.lanes},KH,KW,IC/{isa.group},{isa.lanes},{isa.group}] {isa.weight_dtype}"
    epilogue = "+bias/requantize/relu/clip/residual fused"
    table = {
        "conv2d": OpSupport("conv2d", dtypes, f"NHWC, {packed}", f"{isa.instruction} direct conv {epilogue}"),
        "grouped_conv2d": OpSupport("grouped_conv2d", dtypes, "NHWC, per-group packing",
                                    f"{isa.instruction} direct conv"),
        "depthwise_conv2d": OpSupport("depthwise_conv2d", dtypes, "NHWC, weights [KH,KW,C] int32",
                                      f"vectorized direct conv {epilogue}"),
        "matmul": OpSupport("matmul", dtypes, f"weights [N/{isa.lanes},K/{isa.group},{isa.lanes},{isa.group}]",
                            f"{isa.instruction} GEMM {epilogue}"),
    }
    return tuple(table[op] for op in ops)


def legalize(isa: DotISA, ops: Iterable[str]) -> Callable[[tvm.target.Target], tvm.transform.Pass]:
    """``TargetSpec.legalize`` hook: the layers of kinds ``ops`` into ``isa``'s kernels."""
    ops = frozenset(ops)
    return lambda _target: int8_kernels(isa, ops)


def schedule_func(fallback: FuncSchedule) -> FuncSchedule:
    """``TargetSpec.schedule_func``: the integer kernel schedule of a PrimFunc holding one,
    else ``fallback`` (the target's FP32 rules)."""

    def schedule(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
        sch = schedule_int8(func, target)
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
                    sch = schedule_int8(func, target)
                    if sch is not None:
                        mod[gvar] = sch.mod["main"].with_attrs({"tirx.is_scheduled": True,
                                                                RULE_ATTR: "schedule_int8"})
            return rest(mod)

        return _pass

    return make


__all__ = ["DotISA", "register_isa", "get_isa", "select_isa", "dot_desc", "support", "legalize", "schedule",
           "schedule_func", "search_strategy"]
