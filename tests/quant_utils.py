"""Shared helpers for quantization tests: compile a Program, run it, ORT's quantize_static."""
from __future__ import annotations

import numpy as np
import onnx
import tvm
from tvm import relax

from compiler.build import build
from targets import get_target


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
