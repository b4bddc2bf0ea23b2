"""Targets: each subpackage declares a :class:`TargetSpec` (what it accelerates, how it is built
and run) on the shared pieces (``schedules``, ``integer``, ``sparse``); see targets/README.md."""
from __future__ import annotations

from .base import OpSupport, TargetSpec
from .registry import get_target, host_target, open_device, register_device, register_target, target_names
from . import arm, cuda, llvm, sparse, vta, x86  # noqa: F401,E402  (registration side effect)

__all__ = ["OpSupport", "TargetSpec", "register_target", "get_target", "host_target", "target_names",
           "register_device", "open_device"]
