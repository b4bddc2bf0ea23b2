"""Host CPU detection through LLVM (the CPU name and feature flags TVM will use)."""
from __future__ import annotations

import os
from functools import lru_cache

import tvm_ffi


@lru_cache(maxsize=None)
def host_cpu() -> tuple[str, frozenset[str]]:
    """Return LLVM's name for the host CPU and its enabled feature flags."""
    name = str(tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUName")())
    feats = tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")()
    enabled = frozenset(str(k) for k, v in dict(feats).items() if bool(v))
    return name, enabled


def host_cores() -> int:
    """Cores available to this process (what TVM's thread pool should use)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
