"""x86 CPUs: the host (auto-detected LLVM CPU name, features, cores) and named ISA levels.

``x86`` compiles for this machine; ``x86-vnni``, ``x86-avx512`` and ``x86-avx2`` name an ISA
level explicitly (an LLVM CPU that has it), e.g. to cross-compile for another x86 machine.
Integer kernels use the best dot product the CPU has (:func:`.int8.select_isa`).
"""
from __future__ import annotations

from tvm.target.codegen import llvm_get_cpu_features
import tvm

from .. import register_target
from ..base import OpSupport, TargetSpec
from . import int8
from .host import host_cores, host_cpu
from .schedules import default_schedule

FP32_OPS = (
    OpSupport("conv2d", ("float32",), "NHWC/OHWI", "vectorized direct conv"),
    OpSupport("depthwise_conv2d", ("float32",), "NHWC", "vectorized direct conv"),
    OpSupport("matmul", ("float32",), "", "register-tiled GEMM"),
)

# Explicit targets: name -> (LLVM CPU, what it stands for).
NAMED_CPUS = {
    "x86-vnni": ("cascadelake", "AVX-512 VNNI CPUs (Cascade Lake and later, Zen 4)"),
    "x86-avx512": ("skylake-avx512", "AVX-512BW CPUs without VNNI (Skylake-SP)"),
    "x86-avx2": ("haswell", "AVX2 CPUs (Haswell and later)"),
}


def x86_spec(name: str, description: str, cpu: str, features: frozenset[str]) -> TargetSpec:
    """A TargetSpec for LLVM CPU ``cpu``, with integer kernels when its features allow.

    On AVX-512 CPUs LLVM's ``prefer-256-bit`` tuning is turned off: it splits the 16-lane
    vectors of the schedules (e.g. the integer kernels' requantization epilogues) into two
    ymm halves, which made a residual conv layer's epilogue ~1.8x slower.
    """
    isa = int8.select_isa(features)
    target_json = {"kind": "llvm", "mcpu": cpu, "num-cores": host_cores()}
    if "avx512f" in features:
        target_json["mattr"] = ["-prefer-256-bit"]
    return TargetSpec(
        name=name,
        description=description + (f"; int8 via {isa.name}" if isa else ""),
        target_json=target_json,
        accelerates=FP32_OPS + (int8.int8_support(isa) if isa else ()),
        schedule=int8.schedule if isa else default_schedule,
        legalize=int8.legalize(isa) if isa else None,
        search_strategy=int8.search_strategy if isa else None,
        features=tuple(sorted(features)),
        sparse=("block", "nm") if "avx512f" in features else ("block",),
    )


@register_target("x86")
def host_x86() -> TargetSpec:
    """The machine Squeeze runs on, with every ISA extension it reports."""
    cpu, feats = host_cpu()
    simd = [f for f in ("avx512vnni", "avx512bw", "avx512f", "avx2") if f in feats]
    return x86_spec("x86", f"this host: {cpu}, {host_cores()} cores, {' '.join(simd) or 'no AVX'}", cpu, feats)


def _named(name: str):
    cpu, what = NAMED_CPUS[name]

    def factory() -> TargetSpec:
        target = tvm.target.Target({"kind": "llvm", "mcpu": cpu})
        feats = frozenset(str(f) for f in llvm_get_cpu_features(target))
        return x86_spec(name, f"{what}: -mcpu={cpu}", cpu, feats)

    return register_target(name)(factory)


for _name in NAMED_CPUS:
    _named(_name)
