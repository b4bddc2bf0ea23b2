"""x86 CPUs: the host (auto-detected LLVM CPU name, features, cores) and named ISA levels.

``x86`` compiles for this machine; ``x86-vnni``, ``x86-avx512`` and ``x86-avx2`` name an ISA
level explicitly (an LLVM CPU that has it), e.g. to cross-compile for another x86 machine.
What is x86's own is the dot-product ISA descriptions and intrinsics (:mod:`.intrin`); the
kernels, schedules and tuning space are the shared ones (:mod:`targets.integer`,
:mod:`targets.schedules`).
"""
from __future__ import annotations

from tvm.target.codegen import llvm_get_cpu_features
import tvm

from .. import integer
from ..base import TargetSpec
from ..host import host_cores, host_cpu
from ..registry import register_target
from ..schedules import FP32_OPS, cpu_legalize, default_schedule, schedule_primfunc
from .intrin import ISAS, NATIVE, fix_stock_vnni


# Explicit targets: name -> (LLVM CPU, what it stands for).
NAMED_CPUS = {
    "x86-vnni": ("cascadelake", "AVX-512 VNNI CPUs (Cascade Lake and later, Zen 4)"),
    "x86-avx512": ("skylake-avx512", "AVX-512BW CPUs without VNNI (Skylake-SP)"),
    "x86-avx2": ("haswell", "AVX2 CPUs (Haswell and later)"),
}


# Where the bit-serial kernels beat the VNNI int8 kernel (bench/lowbit.py on an AVX-512 VPOPCNTDQ Xeon,
# the layer's kernel alone): one plane pair on convs reducing >= 9 words per output (3x3 with 64+
# channels: 1.2-3.6x; a 1x1 conv over 4 words is 0.7x), two from 72 words (3x3x512: 1.35-1.6x), and
# matrix-vector products up to 2 x 2 bits (3.6x at 4096 x 4096: int8 weights are memory-bound).
BITSERIAL = integer.BitSerialSupport(
    rules=(integer.BitSerialRule(("conv2d", "grouped_conv2d"), 1, 9), integer.BitSerialRule(("conv2d",), 2, 72),
           integer.BitSerialRule(("matmul",), 4, 16)),
    word=64, instruction="vpopcntq zmm")


def search_strategy(mod: tvm.IRModule):
    """The shared grid search for integer tasks, after mending TVM's ``dot_16x4_vnni``, which
    MetaSchedule's default x86 rules use to tensorize other integer blocks (e.g. activation ×
    activation matmuls)."""
    fix_stock_vnni()
    return integer.search_strategy(mod)


def x86_spec(name: str, description: str, cpu: str, features: frozenset[str]) -> TargetSpec:
    """A TargetSpec for LLVM CPU ``cpu``, with integer kernels when its features allow.

    On AVX-512 CPUs LLVM's ``prefer-256-bit`` tuning is turned off: it splits the 16-lane
    vectors of the schedules (e.g. the integer kernels' requantization epilogues) into two
    ymm halves, which made a residual conv layer's epilogue ~1.8x slower.
    """
    isa = integer.select_isa(features, ISAS)
    bitserial = BITSERIAL if isa and "avx512vpopcntdq" in features else None
    target_json = {"kind": "llvm", "mcpu": cpu, "num-cores": host_cores()}
    if "avx512f" in features:
        target_json["mattr"] = ["-prefer-256-bit"]
    native = NATIVE.get(isa, ())
    ops = integer.support(isa, native=native) if isa else ()
    return TargetSpec(
        name=name,
        description=description + (f"; int8 via {isa.name}" if isa else "")
        + (f", bit-serial via {bitserial.instruction}" if bitserial else ""),
        target_json=target_json,
        accelerates=FP32_OPS + ops,
        quant_scheme="int8",  # u8 activations x s8 weights: what vpdpbusd / vpmaddwd take
        schedule=integer.schedule(default_schedule) if isa else default_schedule,
        schedule_func=integer.schedule_func(schedule_primfunc) if isa else schedule_primfunc,
        legalize=cpu_legalize(integer.legalize(isa, {s.op for s in ops}, native, bitserial=bitserial) if isa else None),
        search_strategy=search_strategy if isa else None,
        features=tuple(sorted(features)),
        sparse=("block", "nm") if "avx512f" in features else ("block",),
        bitserial=bitserial,
    )


@register_target("x86", host_arch="x86_64")
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
