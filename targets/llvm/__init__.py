"""Generic LLVM CPU target: portable code for the host's architecture, no tuned kernels."""
from __future__ import annotations

from compiler.ir import LAYER_KINDS

from ..base import OpSupport, TargetSpec
from ..host import host_cores
from ..registry import register_target

# Integer layers still run in integers here, through TVM's generic (unscheduled) legalization.
GENERIC_INT_OPS = tuple(OpSupport(op, ("uint8", "int8", "int32"), "", "TVM generic legalization, unscheduled")
                        for op in LAYER_KINDS)


@register_target("llvm")
def generic_llvm() -> TargetSpec:
    """Portable code for the host triple, without CPU-specific extensions or schedules."""
    return TargetSpec(
        name="llvm",
        description=f"generic CPU code for the host triple, {host_cores()} cores, default TVM schedules",
        target_json={"kind": "llvm", "num-cores": host_cores()},
        accelerates=GENERIC_INT_OPS,
    )
