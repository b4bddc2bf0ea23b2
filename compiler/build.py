"""Build driver: Program → fused, scheduled TIR → compiled Relax executable."""
from __future__ import annotations

import os

import tvm
from tvm import relax

from targets import TargetSpec

from .program import Program


def graph_lowering(conv_layout: tuple[str, str]) -> tvm.transform.Pass:
    """Relax → fused TIR PrimFuncs, weights folded (layout transforms of constants included)."""
    data_layout, kernel_layout = conv_layout
    return tvm.transform.Sequential(
        [
            relax.transform.ConvertLayout({"relax.nn.conv2d": [data_layout, kernel_layout]}),
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
        ],
        name="squeeze.graph_lowering",
    )


def lower(program: Program, spec: TargetSpec, database: str | os.PathLike | None = None) -> tvm.IRModule:
    """Lower a Program to a module of scheduled PrimFuncs for ``spec``.

    Tuned schedules from ``database`` (a MetaSchedule work dir) take precedence;
    the remaining PrimFuncs get the target's default schedules.
    """
    mod = program.bind_params().mod
    target = spec.target
    with target:
        mod = graph_lowering(spec.conv_layout)(mod)
        if database is not None:
            mod = relax.transform.MetaScheduleApplyDatabase(os.fspath(database))(mod)
        if spec.schedule is not None:
            mod = spec.schedule(target)(mod)
    return mod


def build(program: Program, spec: TargetSpec, database: str | os.PathLike | None = None) -> tvm.runtime.Executable:
    """Compile a Program for a target; returns a Relax VM executable."""
    mod = lower(program, spec, database)
    return tvm.compile(mod, spec.target, relax_pipeline=relax.pipeline.default_build_pipeline())
