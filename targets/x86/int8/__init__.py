"""Integer (uint8 × int8 → int32) kernels for x86: VNNI, with AVX-512BW / AVX2 fallbacks.

:func:`select_isa` picks the dot-product instruction from CPU features; :func:`int8_support`
declares what is accelerated; :func:`legalize` and :func:`schedule` are the TargetSpec hooks.
"""
from __future__ import annotations

from typing import Iterable

import tvm
from tvm import s_tir, tirx

from ...base import OpSupport
from ..schedules import RULE_ATTR, default_schedule, schedule_primfunc
from .intrin import AVX2, AVX512, ISAS, VNNI, DotISA
from .legalize import int8_kernels
from .schedule import schedule_int8
from .tuning import search_strategy  # also registers the MetaSchedule custom rule

def select_isa(features: Iterable[str]) -> DotISA | None:
    """The best integer dot product the CPU features allow (None without AVX2)."""
    feats = set(features)
    if {"avx512vnni", "avx512bw"} <= feats:
        return VNNI
    if "avx512bw" in feats:
        return AVX512
    if "avx2" in feats:
        return AVX2
    return None


def int8_support(isa: DotISA) -> tuple[OpSupport, ...]:
    """OpSupport entries (``squeeze targets``) of the integer kernels for ``isa``."""
    packed = f"weights [G,OC/{isa.lanes},KH,KW,IC/{isa.group},{isa.lanes},{isa.group}] {isa.weight_dtype}"
    kernel = {"vnni": "vpdpbusd", "avx512": "vpmaddwd zmm", "avx2": "vpmaddwd ymm"}[isa.name]
    epilogue = "+bias/requantize/relu/clip/residual fused"
    return (
        OpSupport("conv2d", ("uint8", "int8", "int32"), f"NHWC, {packed}", f"{kernel} direct conv {epilogue}"),
        OpSupport("grouped_conv2d", ("uint8", "int8", "int32"), "NHWC, per-group packing", f"{kernel} direct conv"),
        OpSupport("depthwise_conv2d", ("uint8", "int8", "int32"), "NHWC, weights [KH,KW,C] int32",
                  f"vectorized direct conv {epilogue}"),
        OpSupport("matmul", ("uint8", "int8", "int32"), f"weights [N/{isa.lanes},K/{isa.group},{isa.lanes},"
                  f"{isa.group}]", f"{kernel} GEMM {epilogue}"),
    )


def legalize(isa: DotISA):
    """``TargetSpec.legalize`` hook for ``isa``."""
    return lambda _target: int8_kernels(isa)


def schedule_any(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    """Integer kernel schedule if ``func`` holds one, else the FP32 default rules."""
    sch = schedule_int8(func, target)
    return sch if sch is not None else schedule_primfunc(func, target)


def schedule(target: tvm.target.Target) -> tvm.transform.Pass:
    """``TargetSpec.schedule`` hook: integer kernels first, then the FP32 default schedules."""
    fp32 = default_schedule(target)

    @tvm.transform.module_pass(opt_level=0, name="x86.int8_schedule")
    def _pass(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, tirx.PrimFunc) and not (func.attrs or {}).get("tirx.is_scheduled", False):
                sch = schedule_int8(func, target)
                if sch is not None:
                    mod[gvar] = sch.mod["main"].with_attrs({"tirx.is_scheduled": True, RULE_ATTR: "schedule_int8"})
        return fp32(mod)

    return _pass


# compiler.tune seeds its database with the per-function default schedules.
schedule.schedule_primfunc = schedule_any

__all__ = ["select_isa", "int8_support", "legalize", "schedule", "schedule_any", "search_strategy", "ISAS", "VNNI",
           "AVX512", "AVX2", "DotISA"]
