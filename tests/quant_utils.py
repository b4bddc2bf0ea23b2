"""Shared helpers for quantization tests: compile a Program, run it, ORT's quantize_static, and
numpy integer references for the integer layers."""
from __future__ import annotations

import numpy as np
import onnx
import tvm
from tvm import relax

from compiler.build import build
from passes.quantize.realize import QOutput, QTensor, integer_layer
from passes.quantize.requantize import Requant, requantize_reference
from passes.quantize.schemes import QuantSpec
from targets import get_target

U8 = QuantSpec(8, symmetric=False)


def runner(program):
    """A callable ``x -> first output`` for a Program (x86 target)."""
    vm = relax.VirtualMachine(build(program, get_target("x86")), tvm.cpu())
    return lambda x: vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x))).numpy()


def top1(run, images: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean([int(np.argmax(run(images[i:i + 1]))) == labels[i] for i in range(len(images))]))


def ort_quantize_static(src, dst, calib: np.ndarray, method: str = "minmax", per_channel: bool = True) -> None:
    """ONNX Runtime's static QDQ quantization (u8 activations, s8 weights) on ``calib``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=methods[method])


def integer_ops(mod) -> tuple[int, int]:
    """(integer conv/matmul count, float conv/matmul count) in ``main``."""
    text = mod["main"].script()
    layers = text.count("R.nn.conv2d(") + text.count("R.matmul(")
    ints = text.count('out_dtype="int32"')
    return ints, layers - ints


def load(path) -> onnx.ModelProto:
    return onnx.load(str(path))


def numpy_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int, dilation: int, groups: int, pad_value: int):
    """int64 direct convolution (NCHW, OIHW) by explicit windows."""
    n, c, h, wd = x.shape
    o, ipg, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=pad_value)
    oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow), np.int64)
    opg = o // groups
    for oc in range(o):
        g = oc // opg
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * ipg:(g + 1) * ipg, i * dilation:i * dilation + stride * oh:stride,
                           j * dilation:j * dilation + stride * ow:stride]
                out[:, oc] += np.einsum("nchw,c->nhw", patch, w[oc, :, i, j].astype(np.int64))
    return out


def matmul_layer_case(shape: tuple[int, ...], n_out: int, weight_low: int, seed: int):
    """An integer matmul layer ``x[shape] (uint8, zero point 100) @ W[K, n_out]`` and its expected codes.

    Returns ``(x, body, x_codes, want)``: the input var, a function emitting the layer (for a
    BlockBuilder dataflow block), random input codes and the numpy integer reference's output.
    Weight codes are drawn from ``[weight_low, 127]``.
    """
    rng = np.random.default_rng(seed)
    k = shape[-1]
    x_codes = rng.integers(0, 256, shape).astype(np.uint8)
    codes = rng.integers(weight_low, 128, (k, n_out)).astype(np.int8)
    w_scale = rng.uniform(0.001, 0.01, n_out)
    out = QOutput(scale=0.1, zero=128, lo=0, hi=255, dtype="uint8")
    x = relax.Var("x", relax.TensorType(shape, "uint8"))
    call = relax.BlockBuilder().normalize(relax.op.matmul(relax.Var("f", relax.TensorType(shape, "float32")),
                                                          relax.const(np.zeros((k, n_out), np.float32))))

    def body():
        return integer_layer(call, QTensor(x, 0.03, 100, U8), codes, w_scale, None, out, False)

    acc = x_codes.astype(np.int64) @ codes.astype(np.int64) - 100 * codes.astype(np.int64).sum(axis=0)
    per_out = np.float32(0.03) * w_scale.astype(np.float32)
    want = requantize_reference(acc.astype(np.int32), Requant(per_out / np.float32(0.1), 128, 0, 255, "uint8"), -1)
    return x, body, x_codes, want


def missing_features(target_name: str) -> list[str]:
    """ISA extensions code built for ``target_name`` may use that this host lacks."""
    from targets.host import host_cpu

    spec = get_target(target_name)
    return sorted(set(spec.isa) - host_cpu()[1])


def host_can_run(target_name: str) -> bool:
    """Whether code built for ``target_name`` runs here (else it may die with SIGILL)."""
    return get_target(target_name).runs_on_host()


def needs_host(target_name: str):
    """``skipif`` mark for tests executing code built for ``target_name``: skips with the
    extensions the host lacks (e.g. "host lacks avx512vnni") instead of crashing."""
    import pytest

    def reason() -> str:
        missing = missing_features(target_name)
        key = [f for f in missing if f in ("avx512vnni", "avx512bw", "avx512f", "avx2")] or missing
        return f"host lacks {' '.join(key) or 'the architecture of ' + target_name} ({target_name})"

    runs = host_can_run(target_name)
    return pytest.mark.skipif(not runs, reason="" if runs else reason())


def on_host(*target_names: str) -> list:
    """Target names as ``pytest.param``s that skip where the host cannot run their code."""
    import pytest

    return [pytest.param(name, marks=needs_host(name), id=name) for name in target_names]


def needs_int8_host():
    """``skipif`` mark for tests expecting the host target (``x86``) to use integer kernels."""
    import pytest

    return pytest.mark.skipif(not get_target("x86").integer_ops, reason="host has no integer dot-product ISA "
                                                                         "(needs avx2 or better)")
