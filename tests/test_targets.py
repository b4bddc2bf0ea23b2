"""Targets declare what they accelerate, and the quantizer, legalization and runtime ask them."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import compiler
from compiler.errors import SqueezeError
from graphs import GraphBuilder
from targets import get_target, host_target, integer
from targets.integer.isa import DotISA, define_intrin, dot_desc, get_isa, register_isa, use_intrin
from targets.integer.kernels import ConvShape, conv2d
from targets.integer.schedule import schedule_int8
from targets.x86.intrin import ISAS, VNNI


def _depthwise_model():
    g = GraphBuilder(seed=3)
    x = g.op("Relu", [g.conv("input", 3, 16)])
    x = g.op("Relu", [g.conv(x, 16, 16, group=16)])
    x = g.conv(x, 16, 8, k=1)
    return g.model({"input": (1, 3, 8, 8)}, x, (1, 8, 8, 8))


def _calib(n: int = 4) -> dict:
    return {"input": np.random.default_rng(0).standard_normal((n, 3, 8, 8)).astype(np.float32)}


def _layers(art) -> list[dict]:
    return art.manifest.summary["quantization"]["layers"]


def test_declared_intrinsics_are_built_once_on_first_use():
    """Importing a target only declares its tensor intrinsics; the first schedule using one builds it."""
    from tvm.s_tir import TensorIntrin

    built = []

    def make():
        built.append(1)
        return dot_desc(4, 4, "int8", "int8"), dot_desc(4, 4, "int8", "int8")

    define_intrin("squeeze_test_declared", make)
    with pytest.raises(Exception):
        TensorIntrin.get("squeeze_test_declared")
    assert use_intrin("squeeze_test_declared") == use_intrin("squeeze_test_declared") == "squeeze_test_declared"
    assert built == [1] and TensorIntrin.get("squeeze_test_declared") is not None


def test_unknown_isa_is_an_error_not_a_fallback():
    bogus = DotISA("bogus", 4, 4, "int8", "int8", "no_such_intrin", registers=32, vector_bytes=16)
    func = conv2d(ConvShape(1, 4, 4, 8, 8, 1, 1), bogus)
    with pytest.raises(SqueezeError, match="unknown integer ISA 'bogus'"):
        schedule_int8(func, None)
    with pytest.raises(SqueezeError, match="registered ones are .*vnni"):
        get_isa("bogus")


def test_isa_registered_twice_must_agree():
    assert register_isa(VNNI) is VNNI
    with pytest.raises(ValueError, match="registered twice"):
        register_isa(dataclasses.replace(VNNI, registers=16))


def test_select_isa_takes_the_first_the_features_allow():
    from targets.x86.intrin import AVX2

    assert integer.select_isa({"avx2", "fma"}, ISAS) is AVX2
    assert integer.select_isa({"neon"}, ISAS) is None


def test_target_declaration_decides_what_is_quantized():
    """A target whose kernels have no depthwise conv gets that layer kept float, by the
    quantizer's own decision, and legalizes only what it declares."""
    x86 = get_target("x86")
    if not x86.integer_ops:
        pytest.skip("host has no integer kernels (no AVX2)")
    ops = x86.integer_ops - {"depthwise_conv2d"}
    spec = dataclasses.replace(x86, accelerates=tuple(s for s in x86.accelerates if s.op != "depthwise_conv2d"),
                               legalize=integer.legalize(integer.select_isa(x86.features, ISAS), ops))
    art = compiler.compile(_depthwise_model(), spec, quantize=compiler.QuantConfig("int8", calibration=_calib()))
    modes = [(r["mode"], r["reason"]) for r in _layers(art)]
    assert modes[1] == ("float", "depthwise_conv2d has no integer kernel on the target")
    assert modes[0][0] != "float" and modes[2][0] != "float"
    kernels = {k["kernel"] for k in art.manifest.summary["kernels"].values()}
    assert "int8 conv2d" in kernels and "int8 depthwise" not in kernels


def test_default_scheme_comes_from_the_target():
    spec = dataclasses.replace(get_target("llvm"), quant_scheme="int8_sym")
    art = compiler.compile(_depthwise_model(), spec, quantize=compiler.QuantConfig(calibration=_calib()))
    assert art.manifest.summary["quantization"]["scheme"] == "w8_sym_per_channel__a8_sym_per_tensor"
    art = compiler.compile(_depthwise_model(), "llvm", quantize=compiler.QuantConfig(calibration=_calib()))
    assert art.manifest.summary["quantization"]["scheme"] == "w8_sym_per_channel__a8_asym_per_tensor"


def test_host_target_is_a_registered_target_for_this_machine():
    spec = host_target()
    assert spec.runs_on_host()
    assert spec.name in ("x86", "llvm")


def test_targets_command_lists_integer_kernels(capsys):
    from compiler.cli import main

    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "x86-vnni" in out and "vpdpbusd" in out and "llvm" in out


def test_cross_target_tuning_needs_a_tracker(tmp_path):
    from compiler.frontend import import_onnx
    from compiler.tune import tune
    from targets.base import TargetSpec

    arm = TargetSpec("board", "an aarch64 board", {"kind": "llvm", "mtriple": "aarch64-linux-gnu"})
    assert arm.arch == "aarch64" and not arm.runs_on_host()
    program = import_onnx(_depthwise_model())
    with pytest.raises(SqueezeError, match="cannot be measured on this host: give --rpc-tracker"):
        tune(program, arm, tmp_path / "db", 16, progress=False)
    with pytest.raises(SqueezeError, match="bad RPC tracker"):
        tune(program, arm, tmp_path / "db", 16, progress=False, rpc_tracker="nohost", rpc_key="k")
    assert not (tmp_path / "db").exists()


def test_missing_cross_compiler_names_the_package(tmp_path):
    import dataclasses as dc

    spec = dc.replace(get_target("llvm"), cross_compiler="no-such-linux-gnu-gcc")
    with pytest.raises(SqueezeError, match="cross compiler no-such-linux-gnu-gcc not found: install it"):
        compiler.compile(_depthwise_model(), spec)
