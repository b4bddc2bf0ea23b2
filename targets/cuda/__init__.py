"""NVIDIA GPUs: INT8 tensor cores (``mma.sync.m16n8k32.s8``, sm_80 and newer).

Presets per architecture (:data:`PRESETS`): ``cuda-sm80`` (A100), ``cuda-sm86`` (A10, A40,
RTX 30), ``cuda-sm89`` (L4, L40S, RTX 40), ``cuda-sm90`` (H100, H200) and ``jetson-orin``
(sm_87 with an aarch64 host, cross-compiled like the ARM targets). Integer convs run as implicit
GEMMs on NHWC data and integer matmuls as GEMMs, on tensor cores with weights packed at compile
time, ``cp.async`` double-buffered shared-memory staging and the epilogue (bias, requantize,
ReLU/clip, residual add, int8 cast) fused (:mod:`.kernels`, :mod:`.schedule`); grouped and
depthwise convs on CUDA cores; everything else (float islands, pools, softmax...) on TVM's dlight
GPU schedules. Symmetric s8 × s8 per-channel (``int8_sym``) is the default scheme: what the MMA
takes. Artifacts embed cubin from nvcc (:mod:`.driver`), never CUDA source.

INT4: layers with 4-bit weights run on the int8 kernels (their weights widened to int8 at
compile time); ``mma.sync.m16n8k64.s4`` kernels are not written yet. Hopper (sm_90) has no INT4
tensor-core MMA at all, which its preset says.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import tvm

from ..base import OpSupport, TargetSpec
from ..registry import register_device, register_target
from . import driver
from .legalize import cuda_kernels
from .schedule import ASYNC_COPY, schedule, schedule_cuda

INTEGER_OPS = ("conv2d", "grouped_conv2d", "depthwise_conv2d", "matmul")
ARM_HOST = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78ae", "mattr": ["+neon", "+dotprod"]}

# name -> (architecture, GPUs, native INT4 MMA, host target or None for this machine's)
PRESETS = {
    "cuda-sm80": ("sm_80", "A100", True, None),
    "cuda-sm86": ("sm_86", "A10, A40, RTX 30", True, None),
    "cuda-sm89": ("sm_89", "L4, L40S, RTX 40", True, None),
    "cuda-sm90": ("sm_90", "H100, H200", False, None),
    "jetson-orin": ("sm_87", "Jetson AGX Orin (aarch64 host)", True, ARM_HOST),
}
INT4_NOTE = {True: "int4 layers run on the int8 kernels (s4 MMA kernels not written yet)",
             False: "no INT4 tensor-core MMA on Hopper: int4 weights run unpacked to int8 on the int8 MMA"}

ACCELERATES = (
    OpSupport("conv2d", ("int8", "int8", "int32"), "NHWC, weights [OC, KH*KW*IC16] int8",
              "mma.sync.m16n8k32 implicit GEMM, cp.async double buffering, "
              "+bias/requantize/relu/clip/residual fused"),
    OpSupport("grouped_conv2d", ("int8", "int8", "int32"), "NHWC, weights [OC, KH, KW, IC/G]", "CUDA-core direct conv"),
    OpSupport("depthwise_conv2d", ("int8", "int8", "int32"), "NHWC, weights [C, KH, KW, 1]", "CUDA-core direct conv"),
    OpSupport("matmul", ("int8", "int8", "int32"), "weights [N, K] int8",
              "mma.sync.m16n8k32 GEMM, cp.async double buffering, +bias/requantize/relu/clip/residual fused"),
    OpSupport("conv2d", ("float32",), "NHWC/OHWI", "dlight GPU fallback"),
    OpSupport("matmul", ("float32",), "", "dlight GPU matmul"),
)


def _build_context(target_json: dict):
    @contextlib.contextmanager
    def context() -> Iterator[None]:
        driver.enable_cubin()
        with tvm.target.Target(target_json), tvm.transform.PassContext(opt_level=3, config=ASYNC_COPY):
            yield

    return context


def cuda_spec(name: str) -> TargetSpec:
    """The TargetSpec of preset ``name`` (:data:`PRESETS`)."""
    arch, gpus, int4, host = PRESETS[name]
    target_json = {"kind": "cuda", "arch": arch, "host": host or {"kind": "llvm"}}
    return TargetSpec(
        name=name,
        description=f"NVIDIA {arch} ({gpus}): int8 tensor cores via mma.sync.m16n8k32.s8; {INT4_NOTE[int4]}",
        target_json=target_json,
        accelerates=ACCELERATES,
        quant_scheme="int8_sym",  # s8 activations x s8 weights: what mma.sync.s8 takes
        schedule=schedule,
        schedule_func=schedule_cuda,
        legalize=lambda _target: cuda_kernels(frozenset(INTEGER_OPS)),
        sparse=(),
        device="cuda",
        cross_compiler="aarch64-linux-gnu-gcc" if host else None,
        build_context=_build_context(target_json),
    )


for _name in PRESETS:
    register_target(_name)(lambda name=_name: cuda_spec(name))


def _open(record: dict):
    """The runtime's CUDA device for an artifact (manifest target ``record``)."""
    return driver.open_device(record.get("json", {}).get("arch", ""))


register_device("cuda", _open)
