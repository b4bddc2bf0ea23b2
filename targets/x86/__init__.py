"""x86 CPUs: host auto-detected (LLVM CPU name, features, cores)."""
from __future__ import annotations

from .. import register_target
from ..base import OpSupport, TargetSpec
from .host import host_cores, host_cpu
from .schedules import default_schedule

FP32_OPS = (
    OpSupport("conv2d", ("float32",), "NHWC/OHWI", "vectorized direct conv"),
    OpSupport("depthwise_conv2d", ("float32",), "NHWC", "vectorized direct conv"),
    OpSupport("matmul", ("float32",), "", "register-tiled GEMM"),
)


@register_target("x86")
def host_x86() -> TargetSpec:
    """The machine Squeeze runs on, with every ISA extension it reports."""
    cpu, feats = host_cpu()
    simd = [f for f in ("avx512vnni", "avx512bw", "avx512f", "avx2") if f in feats]
    return TargetSpec(
        name="x86",
        description=f"this host: {cpu}, {host_cores()} cores, {' '.join(simd) or 'no AVX'}",
        target_json={"kind": "llvm", "mcpu": cpu, "num-cores": host_cores()},
        accelerates=FP32_OPS,
        schedule=default_schedule,
        features=tuple(sorted(feats)),
    )
