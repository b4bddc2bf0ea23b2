"""AArch64 boards: Raspberry Pi 4 / 5, Jetson Orin's CPU, AWS Graviton3 and a portable baseline.

Each preset names its core (``mcpu``), the ISA extensions the code may use (``mattr``) and its
core count; code is cross-compiled for ``aarch64-linux-gnu`` and linked with
``aarch64-linux-gnu-gcc`` (Debian ``gcc-aarch64-linux-gnu``). Integer layers run on the
shared kernels (:mod:`targets.integer`) with the best dot product the core has: ``smmla``
(Armv8.6 i8mm), ``sdot`` (Armv8.2 dotprod) or ``smull``/``sadalp`` (any NEON core), see
:mod:`.intrin`. They take int8 × int8, so these targets quantize symmetrically (``int8_sym``) by
default. Each preset also declares the ISA for uint8 activations (the asymmetric ``int8``
scheme): ``ummla`` or ``udot`` where the core has them, else they are shifted into the int8 ISA.

``aarch64`` is portable Armv8.0 NEON code that runs on every 64-bit Arm core (Cortex-A53 and
A72 included; the host target on an AArch64 machine, linked by the native compiler there); pick a
board preset for ``sdot``.
"""
from __future__ import annotations

import tvm
from tvm.target.codegen import llvm_get_cpu_features

from compiler.ir import LAYER_KINDS

from .. import integer
from ..base import TargetSpec
from ..host import host_triple, triple_arch
from ..registry import register_target
from ..schedules import FP32_OPS, cpu_legalize, default_schedule, schedule_primfunc
from .intrin import ISAS, UNSIGNED_ISAS

TRIPLE = "aarch64-linux-gnu"
CROSS_COMPILER = "aarch64-linux-gnu-gcc"

# name -> (LLVM CPU, mattr, cores, what it stands for); the Pi 4's BCM2711 lacks the crypto
# extension that LLVM's cortex-a72 assumes (the manifest lists the extensions a board must have)
BOARDS = {
    "rpi4": ("cortex-a72", ["+neon", "-aes", "-sha2"], 4, "Raspberry Pi 4 (4x Cortex-A72, no dotprod, no crypto)"),
    "rpi5": ("cortex-a76", ["+neon", "+dotprod"], 4, "Raspberry Pi 5 (4x Cortex-A76)"),
    "jetson-orin-cpu": ("cortex-a78ae", ["+neon", "+dotprod"], 12, "Jetson AGX Orin CPU (12x Cortex-A78AE)"),
    "graviton3": ("neoverse-v1", ["+neon", "+dotprod", "+i8mm"], 64, "AWS Graviton3 (64x Neoverse V1)"),
    "aarch64": ("generic", ["+neon"], 4, "any AArch64 core (portable Armv8.0 NEON, no dotprod)"),
}


# Where the bit-serial kernels beat sdot (bench/lowbit.py --arm rpi5, llvm-mca estimates on Cortex-A76):
# convs of up to 2 plane pairs (1.3-3.6x; 2 x 2 bits about 1x), matrix-vector products up to 2 x 2
# bits (1.4-4.6x). NEON cnt counts bytes and uadalp adds them into 16-bit lanes: 16-bit words.
BITSERIAL = integer.BitSerialSupport(
    rules=(integer.BitSerialRule(("conv2d", "grouped_conv2d"), 2, 4), integer.BitSerialRule(("matmul",), 4, 4)),
    word=16, instruction="cnt + uadalp")


def arm_spec(name: str) -> TargetSpec:
    """The TargetSpec of board ``name`` (:data:`BOARDS`), with the best integer ISAs its core has
    for int8 activations (the default) and for uint8 ones."""
    cpu, mattr, cores, what = BOARDS[name]
    target_json = {"kind": "llvm", "mtriple": TRIPLE, "mcpu": cpu, "mattr": list(mattr), "num-cores": cores}
    features = frozenset(str(f) for f in llvm_get_cpu_features(tvm.target.Target(target_json)))
    isa = integer.select_isa(features, ISAS)
    unsigned = integer.select_isa(features, UNSIGNED_ISAS)
    native = (unsigned,) if unsigned else ()
    return TargetSpec(
        name=name,
        description=f"{what}: -mcpu={cpu}; int8 via {isa.instruction}"
                    + (f", uint8 activations via {unsigned.instruction}" if unsigned else "")
                    + f", bit-serial via {BITSERIAL.instruction}",
        target_json=target_json,
        accelerates=FP32_OPS + integer.support(isa, LAYER_KINDS, native),
        quant_scheme="int8_sym",  # s8 activations x s8 weights: what smmla / sdot / smull take
        schedule=integer.schedule(default_schedule),
        schedule_func=integer.schedule_func(schedule_primfunc),
        legalize=cpu_legalize(integer.legalize(isa, LAYER_KINDS, native, bitserial=BITSERIAL)),
        search_strategy=integer.search_strategy,
        features=tuple(sorted(features)),
        cross_compiler=None if triple_arch(host_triple()) == "aarch64" else CROSS_COMPILER,
        bitserial=BITSERIAL,
    )


for _name in BOARDS:  # on an AArch64 machine, the portable preset is the host's target
    register_target(_name, host_arch="aarch64" if _name == "aarch64" else None)(lambda name=_name: arm_spec(name))
