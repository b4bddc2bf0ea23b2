"""VTA, the Versatile Tensor Accelerator (open FPGA design: Pynq-Z1, Ultra96, ZCU104, DE10-Nano).

What is VTA's own: the ISA (:mod:`.isa`, bit for bit as the published hardware decodes it), the
hardware configuration as data (:mod:`.config`), the lowering of one integer layer to an
instruction stream (:mod:`.lower`), the Relax rewrite offloading layers (:mod:`.legalize`), the C
simulator with its cycle model (:mod:`.simulator`), the register-level driver (:mod:`.driver`)
and the packed function compiled code calls (:mod:`.runtime`). The CPU part of the graph (the
stem when it does not pay, pooling, residual adds, softmax, float islands) runs on the host's
own target declaration, reused, not copied: x86 for the simulator, the board's ARM core on a board.

Targets: ``vta-sim`` (this x86 host + the simulator, Pynq clocks in the cycle model),
``vta-ultra96`` (AArch64 host code) and ``vta-pynq`` (ARMv7 host code, generic LLVM kernels).
All quantize shift-only (``int8_pow2``): VTA requantizes with ADD and SHR.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import tvm

from compiler.errors import SqueezeError

from ..base import OpSupport, TargetSpec
from ..registry import register_target
from ..schedules import FP32_OPS, default_schedule, schedule_primfunc
from . import runtime  # noqa: F401  (registers squeeze.vta.run)
from .config import BOARDS, Board, VTAConfig
from .legalize import vta_layers

QUANT_SCHEME = "int8_pow2"  # power-of-two scales: requantization is ADD + SHR on VTA's ALU
CONFIG_ENV = "SQUEEZE_VTA_CONFIG"  # a vta_config.json describing the user's bitstream


def user_config() -> VTAConfig:
    """The hardware configuration of ``$SQUEEZE_VTA_CONFIG`` (a ``vta_config.json``), else the
    published default; a bad file is one line naming the field."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return VTAConfig()
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SqueezeError(f"{CONFIG_ENV}={path}: cannot read it ({err.strerror})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise SqueezeError(f"{CONFIG_ENV}={path}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(doc, dict):
        raise SqueezeError(f"{CONFIG_ENV}={path}: expected an object of VTA config fields")
    return VTAConfig.from_json(doc)


def vta_ops(cfg: VTAConfig) -> tuple[OpSupport, ...]:
    layout = f"NCHW{cfg.batch}n{cfg.block}c / OIHW{cfg.block}o{cfg.block}i"
    kernel = f"VTA GEMM {cfg.batch}x{cfg.block}x{cfg.block}"
    return (OpSupport("conv2d", ("int8", "int8", "int32"), layout, kernel),
            OpSupport("matmul", ("int8", "int8", "int32"), layout, kernel))


def _legalize(cfg: VTAConfig, board: Board, cpu_legalize):
    def make(target: tvm.target.Target) -> tvm.transform.Pass:
        passes = [vta_layers(cfg, board)]
        if cpu_legalize is not None:
            passes.append(cpu_legalize(target))
        return tvm.transform.Sequential(passes, name="squeeze.vta_legalize")

    return make


def vta_spec(name: str, host: TargetSpec, board: Board, cfg: VTAConfig | None = None) -> TargetSpec:
    """The host CPU's declaration with VTA's layers offloaded first (the CPU keeps the rest);
    ``cfg`` default: :func:`user_config`."""
    cfg = cfg or user_config()
    cpu_ops = tuple(s for s in host.accelerates if s.op not in ("conv2d", "matmul") or not s.integer)
    return replace(
        host,
        name=name,
        description=f"VTA {cfg.describe()} on {board.description}; CPU part on {host.name}",
        accelerates=vta_ops(cfg) + cpu_ops,
        quant_scheme=QUANT_SCHEME,
        conv_layout=("NCHW", "OIHW"),
        legalize=_legalize(cfg.validate(), board, host.legalize),
        sparse=(),
        bitserial=None,
    )


@register_target("vta-sim")
def vta_sim() -> TargetSpec:
    """This x86 host runs the CPU part and the VTA simulator (cycle model at Pynq clocks)."""
    from ..x86 import host_x86

    return vta_spec("vta-sim", host_x86(), BOARDS["pynq"])


@register_target("vta-ultra96")
def vta_ultra96() -> TargetSpec:
    from ..arm import arm_spec

    return vta_spec("vta-ultra96", arm_spec("aarch64"), BOARDS["ultra96"])


@register_target("vta-pynq")
def vta_pynq() -> TargetSpec:
    """Pynq-Z1's Cortex-A9 (ARMv7, NEON): generic LLVM code for the CPU part."""
    host = TargetSpec(name="armv7", description="Cortex-A9",
                      target_json={"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mcpu": "cortex-a9",
                                   "mattr": ["+neon"], "num-cores": 2},
                      accelerates=FP32_OPS, schedule=default_schedule, schedule_func=schedule_primfunc,
                      cross_compiler="arm-linux-gnueabihf-gcc")
    return vta_spec("vta-pynq", host, BOARDS["pynq"])


__all__ = ["VTAConfig", "BOARDS", "vta_spec", "vta_ops", "QUANT_SCHEME"]
