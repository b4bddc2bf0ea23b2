"""Default (untuned) LLVM CPU schedules for the fused PrimFuncs of a lowered module.

Shared by the CPU targets: the rules read the vector width and register count from the
target's features (:func:`.common.vector_isa`).

Each rule is ``rule(func, target) -> Schedule | None``; the first rule that returns a
schedule wins. Functions already scheduled (``tirx.is_scheduled``, e.g. applied from a
MetaSchedule database) are left alone.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError

from ..base import OpSupport
from .conv2d import schedule_conv2d
from .elementwise import schedule_elementwise
from .fast_sigmoid import sigmoid_as_exp
from .matmul import schedule_matmul
from .pad_channels import pad_output_channels
from .pool import schedule_pool
from .reduction import schedule_row_reduction
from .softmax_axis import softmax_over_last_axis

Rule = Callable[[tirx.PrimFunc, tvm.target.Target], Optional[s_tir.Schedule]]
Legalize = Callable[[tvm.target.Target], tvm.transform.Pass]
RULES: tuple[Rule, ...] = (schedule_conv2d, schedule_matmul, schedule_pool, schedule_row_reduction,
                           schedule_elementwise)

RULE_ATTR = "squeeze.schedule_rule"  # records which rule scheduled a PrimFunc
# What these schedules accelerate, for a CPU target's ``TargetSpec.accelerates``.
FP32_OPS = (
    OpSupport("conv2d", ("float32",), "NHWC/OHWI", "vectorized direct conv"),
    OpSupport("depthwise_conv2d", ("float32",), "NHWC", "vectorized direct conv"),
    OpSupport("matmul", ("float32",), "", "register-tiled GEMM"),
)
log = logging.getLogger(__name__)


def cpu_legalize(integer_kernels: Legalize | None = None) -> Legalize:
    """``TargetSpec.legalize`` of a CPU target: its integer kernels (when it has an integer ISA),
    then the float rewrites these schedules want (:func:`.pad_channels.pad_output_channels`,
    :func:`.softmax_axis.softmax_over_last_axis`, :func:`.fast_sigmoid.sigmoid_as_exp`)."""

    def legalize(target: tvm.target.Target) -> tvm.transform.Pass:
        first = [integer_kernels(target)] if integer_kernels is not None else []
        floats = [pad_output_channels(target), softmax_over_last_axis(), sigmoid_as_exp()]
        return tvm.transform.Sequential([*first, *floats], name="squeeze.cpu_legalize")

    return legalize


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    return bool((func.attrs or {}).get("tirx.is_scheduled", False))


def _first_rule(func: tirx.PrimFunc, target: tvm.target.Target) -> tuple[s_tir.Schedule, str] | None:
    for rule in RULES:
        try:
            sch = rule(func, target)
        except ScheduleError as err:  # a rule that cannot handle a variant declines it
            log.debug("%s declined: %s", rule.__name__, str(err).splitlines()[0])
            continue
        if sch is not None:
            return sch, rule.__name__
    return None


def schedule_primfunc(func: tirx.PrimFunc, target: tvm.target.Target) -> s_tir.Schedule | None:
    """Schedule one PrimFunc with the first rule that matches it (None if none does)."""
    found = _first_rule(func, target)
    return found[0] if found else None


def default_schedule(target: tvm.target.Target) -> tvm.transform.Pass:
    """Schedule every unscheduled PrimFunc of a lowered module with the first matching rule.

    Rules may re-lay weights (parameters listed in ``layout_free_buffers``) through blocks
    marked ``meta_schedule.layout_rewrite_preproc``, which ``compiler.build.lower`` folds
    into new constants, so packing costs nothing at run time.
    """

    @tvm.transform.module_pass(opt_level=0, name="squeeze.default_schedule")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updates = {}
        for gvar, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and not _is_scheduled(func):
                found = _first_rule(func, target)
                if found is not None:
                    sch, rule = found
                    updates[gvar] = sch.mod["main"].with_attrs({"tirx.is_scheduled": True, RULE_ATTR: rule})
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    return _pass

