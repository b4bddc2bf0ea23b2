"""Running a model on this host, for the steps that need data: calibration, pruning criteria,
re-fits and sensitivity scans.

This module belongs to the core, so passes may call :func:`host_vm`; how a module is built
for the host is the driver's to say (``compiler.build`` registers it when imported), so
the core never imports the build or the targets.
"""
from __future__ import annotations

from typing import Callable

from tvm import relax

from .program import Program

_BUILDER: list[Callable[[Program], relax.VirtualMachine]] = []


def register_host_vm(builder: Callable[[Program], relax.VirtualMachine]) -> None:
    """Set how a Program is compiled into a VM on this host (the driver calls this once)."""
    _BUILDER[:] = [builder]


def host_vm(program: Program) -> relax.VirtualMachine:
    """``program`` compiled for this host, ready to run."""
    if not _BUILDER:
        raise RuntimeError("no host builder registered: import compiler.build (the driver) before running passes "
                           "that need data")
    return _BUILDER[0](program)
