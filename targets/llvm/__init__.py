"""Generic LLVM CPU target: portable code for the host's architecture, no tuned kernels."""
from __future__ import annotations

from .. import register_target
from ..base import TargetSpec
from ..x86.host import host_cores


@register_target("llvm")
def generic_llvm() -> TargetSpec:
    """Portable code for the host triple, without CPU-specific extensions or schedules."""
    return TargetSpec(
        name="llvm",
        description=f"generic CPU code for the host triple, {host_cores()} cores, default TVM schedules",
        target_json={"kind": "llvm", "num-cores": host_cores()},
    )
