"""Shared helpers for quantization tests: compile a Program, run it, ORT's quantize_static, and
numpy integer references for the integer layers."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import tvm
from tvm import relax

from compiler.build import build
from compiler.program import Program, TensorSpec
from passes.quantize.realize import QOutput, QTensor, integer_layer
from passes.quantize.requantize import Requant, requantize_reference
from passes.quantize.schemes import QuantSpec
from targets import get_target
from targets.host import host_cpu, x86_without_vnni

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


# ONNX Runtime's fused u8 x s8 kernels on x86 without VNNI (vpmaddubsw) saturate int16 pair sums:
# its own docs advise reduce_range there. Such a host gets no bit-exact integer reference from it.
ORT_INT8_EXACT = not x86_without_vnni()


def needs_exact_ort_int8(test):
    """Skip ``test``, which compares with ONNX Runtime's integer kernels, where they saturate."""
    import pytest

    return pytest.mark.skipif(not ORT_INT8_EXACT, reason="ONNX Runtime's u8s8 kernels saturate on x86 "
                              "without VNNI: no integer reference here")(test)


def ort_qdq_session(path, threads: int = 2):
    """An ONNX Runtime session for a QDQ model: its fused integer kernels where they are exact
    (:data:`ORT_INT8_EXACT`), else node by node (DequantizeLinear → float op → QuantizeLinear)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not ORT_INT8_EXACT:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def missing_features(target_name: str) -> list[str]:
    """ISA extensions code built for ``target_name`` may use that this host lacks."""
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


def layer_program(x: relax.Var, body) -> Program:
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body())
        bb.emit_func_output(out)
    mod = bb.get()
    shape = tuple(int(d) for d in x.ty.shape)
    out_ty = mod["main"].ret_ty
    return Program(mod, {}, [TensorSpec("x", shape, str(x.ty.dtype))],
                   [TensorSpec("y", tuple(int(d) for d in out_ty.shape), str(out_ty.dtype))])


# ---- independent numpy references of integer layers (not passes.quantize.requantize) ----------

def fixed_point(multiplier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``M = m0 · 2^-n`` with ``m0`` in [2^30, 2^31) rounded to nearest (the requantize spec)."""
    m0, shift = [], []
    for m in np.asarray(multiplier, np.float64).reshape(-1):
        mant, exp = math.frexp(float(m))
        q = round(mant * 2 ** 31)
        if q == 2 ** 31:
            q, exp = q // 2, exp + 1
        m0.append(q)
        shift.append(31 - exp)
    return np.array(m0, np.int64), np.array(shift, np.int64)


def requantize_codes(acc: np.ndarray, multiplier: np.ndarray, zero: int, lo: int, hi, axis: int, fixed: bool,
                dtype: str) -> np.ndarray:
    """int64 accumulators → codes: float32 ``round(acc·M)`` (half to even) or fixed point
    ``(acc·m0 + 2^(n-1)) >> n`` (int64, half up), then ``+ zero`` and a clip to ``[lo, hi]``
    (``hi`` may be per channel)."""
    shape = [1] * acc.ndim
    shape[axis] = -1
    if fixed:
        m0, shift = (a.reshape(shape) for a in fixed_point(multiplier))
        assert np.abs(acc).max() < 2 ** 31
        q = ((acc.astype(np.int64) * m0 + (np.int64(1) << (shift - 1))) >> shift) + zero
    else:
        q = np.round(acc.astype(np.int32).astype(np.float32) * np.asarray(multiplier, np.float32).reshape(shape))
        q = q.astype(np.int64) + zero
    hi = np.asarray(hi).reshape(shape) if np.size(hi) > 1 else int(hi)
    return np.minimum(np.maximum(q, lo), hi).astype(dtype)


def layer_multiplier(x_scale: float, w_scale: np.ndarray, out_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-output-channel ``s_x · s_w``, requantization multiplier), in float32 like ONNX Runtime."""
    per_out = np.float32(x_scale) * np.asarray(w_scale, np.float32)
    return per_out, per_out / np.float32(out_scale)


def tie_channels(rng, codes: np.ndarray, axis: int, fixed: bool) -> np.ndarray:
    """Per-channel weight scales. For fixed point, every other channel gets small weight codes
    and a power-of-two multiplier, so that many ``acc · M`` are exact halves (where the two
    rounding rules differ); the others get full-range codes and arbitrary multipliers."""
    channels = codes.shape[axis]
    if not fixed:
        return rng.uniform(0.001, 0.01, channels)
    w_scale = rng.uniform(2.0 ** -13, 2.0 ** -11, channels)
    ties = np.arange(0, channels, 2)
    w_scale[ties] = 2.0 ** -rng.integers(4, 7, ties.size)
    index = [slice(None)] * codes.ndim
    index[axis] = ties
    codes[tuple(index)] = rng.integers(-3, 4, codes[tuple(index)].shape)
    return w_scale


def check_rule_matters(acc, mult, out: QOutput, axis: int, fixed: bool, want: np.ndarray) -> None:
    """With ties, the other requantization rule gives different codes: the case can fail."""
    if fixed:
        other = requantize_codes(acc, mult, out.zero, out.lo, out.hi, axis, not fixed, out.dtype)
        assert (other != want).any(), "no rounding tie: the case cannot tell the two rules apart"


def _codes(rng, spec: QuantSpec, x_range, shape) -> tuple[np.ndarray, int, int]:
    """Input codes in ``x_range`` (None: the dtype's bound), both bounds included once."""
    info = np.iinfo(spec.dtype)
    lo, hi = (info.min if x_range[0] is None else x_range[0]), (info.max if x_range[1] is None else x_range[1])
    x_codes = rng.integers(lo, hi + 1, shape).astype(spec.dtype)
    x_codes.reshape(-1)[:2] = (lo, hi)
    return x_codes, lo, hi


def _weights(rng, w_range, w_values, shape) -> np.ndarray:
    return (rng.choice(w_values, shape) if w_values is not None else rng.integers(*w_range, shape)).astype(np.int8)


def _layer_input(x: relax.Var, clip: tuple[int, int] | None) -> relax.Expr:
    """The layer's input: ``x``, or ``clip(x)`` so that the IR shows the codes' range (as a
    producer's requantization does)."""
    return x if clip is None else relax.op.clip(x, *clip)


def conv_layer(case, x_spec: QuantSpec, x_zero: int, out: QOutput, fixed: bool, seed: int,
               x_range=(None, None), w_range=(-128, 128), w_values=None, clip_input: bool = False):
    """A conv2d integer layer built like realize does, its input codes and numpy expected output.

    ``w_values`` (else ``w_range``) are the weight codes drawn; ``clip_input`` clips the input
    to ``x_range`` in the IR."""
    n, c, h, w, o, k, stride, pad, dil, groups = case
    rng = np.random.default_rng(seed)
    x_codes, lo, hi = _codes(rng, x_spec, x_range, (n, c, h, w))
    codes = _weights(rng, w_range, w_values, (o, c // groups, k, k))
    w_scale, bias = tie_channels(rng, codes, 0, fixed), rng.standard_normal(o)
    x = relax.Var("x", relax.TensorType((n, c, h, w), x_spec.dtype))
    source = _layer_input(x, (lo, hi) if clip_input else None)
    attrs = dict(strides=[stride] * 2, padding=[pad] * 4, dilation=[dil] * 2, groups=groups)
    call = relax.BlockBuilder().normalize(relax.op.nn.conv2d(
        relax.Var("f", relax.TensorType((n, c, h, w), "float32")), relax.const(np.zeros(codes.shape, np.float32)),
        **attrs))
    x_scale = 0.25 if fixed else 0.02
    program = layer_program(x, lambda: integer_layer(call, QTensor(source, x_scale, x_zero, x_spec), codes, w_scale,
                                                bias, out, fixed))
    per_out, mult = layer_multiplier(x_scale, w_scale, out.scale)
    acc = numpy_conv(x_codes.astype(np.int64) - x_zero, codes, stride, pad, dil, groups, pad_value=0)
    acc = acc + np.round(bias / per_out).astype(np.int64).reshape(1, -1, 1, 1)
    want = requantize_codes(acc, mult, out.zero, out.lo, out.hi, 1, fixed, out.dtype)
    check_rule_matters(acc, mult, out, 1, fixed, want)
    return program, x_codes, want


def matmul_layer(shape, n_out: int, x_spec: QuantSpec, x_zero: int, out: QOutput, fixed: bool, seed: int,
                 x_range=(None, None), w_values=None, clip_input: bool = False):
    """A matmul integer layer ``x[shape] @ W[K, n_out]`` (+ bias), its input codes and expected
    output (``x_range``, ``w_values`` and ``clip_input`` as for :func:`conv_layer`)."""
    rng = np.random.default_rng(seed)
    k = shape[-1]
    x_codes, lo, hi = _codes(rng, x_spec, x_range, shape)
    codes = _weights(rng, (-128, 128), w_values, (k, n_out))
    w_scale, bias = tie_channels(rng, codes, 1, fixed), rng.standard_normal(n_out)
    x = relax.Var("x", relax.TensorType(shape, x_spec.dtype))
    source = _layer_input(x, (lo, hi) if clip_input else None)
    call = relax.BlockBuilder().normalize(relax.op.matmul(relax.Var("f", relax.TensorType(shape, "float32")),
                                                          relax.const(np.zeros((k, n_out), np.float32))))
    x_scale = 0.25 if fixed else 0.03
    program = layer_program(x, lambda: integer_layer(call, QTensor(source, x_scale, x_zero, x_spec), codes, w_scale,
                                                bias, out, fixed))
    per_out, mult = layer_multiplier(x_scale, w_scale, out.scale)
    acc = (x_codes.astype(np.int64) - x_zero) @ codes.astype(np.int64) + np.round(bias / per_out).astype(np.int64)
    want = requantize_codes(acc, mult, out.zero, out.lo, out.hi, -1, fixed, out.dtype)
    check_rule_matters(acc, mult, out, -1, fixed, want)
    return program, x_codes, want
