"""The host and target machines as LLVM sees them: CPU name, features, triple, architecture.

Shared by every CPU target, and by the driver to decide whether an artifact or a kernel
built for a target can run on this machine.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Iterable

import tvm_ffi

# LLVM feature names that are instruction sets; LLVM's feature lists also hold tuning flags
# (e.g. "fast-15bytenop", "false-deps-popcnt") that say nothing about what code can run.
ISA_PREFIXES = ("avx", "sse", "ssse", "fma", "f16c", "bmi", "amx", "gfni", "vaes", "vpclmul", "sha", "aes",
                "popcnt", "lzcnt", "movbe", "adx", "neon", "sve", "dotprod", "i8mm", "fp16", "bf16", "fullfp16")


@lru_cache(maxsize=None)
def host_cpu() -> tuple[str, frozenset[str]]:
    """Return LLVM's name for the host CPU and its enabled feature flags."""
    name = str(tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUName")())
    feats = tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")()
    enabled = frozenset(str(k) for k, v in dict(feats).items() if bool(v))
    return name, enabled


@lru_cache(maxsize=None)
def host_triple() -> str:
    """LLVM's default target triple of this machine, e.g. ``x86_64-unknown-linux-gnu``."""
    return str(tvm_ffi.get_global_func("tvm.codegen.llvm.GetDefaultTargetTriple")())


def triple_arch(triple: str) -> str:
    """The architecture part of an LLVM triple (``aarch64``, ``x86_64``), as ``platform.machine()`` names it."""
    arch = triple.split("-", 1)[0]
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)


def isa_extensions(features: Iterable[str]) -> list[str]:
    """The instruction-set extensions among LLVM CPU ``features`` (tuning flags dropped), sorted."""
    return sorted({f.lstrip("+") for f in features if f.lstrip("+").startswith(ISA_PREFIXES)})


def x86_without_vnni() -> bool:
    """Whether this is an x86 host without VNNI (AVX512_VNNI or AVX-VNNI): its int8 dot products
    pair-sum in int16 (``vpmaddubsw``), which saturates (ONNX Runtime's u8s8 kernels there)."""
    return triple_arch(host_triple()) == "x86_64" and not {"avx512vnni", "avxvnni"} & host_cpu()[1]


def host_cores() -> int:
    """Cores available to this process (what TVM's thread pool should use)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
