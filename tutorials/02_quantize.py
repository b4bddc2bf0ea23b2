"""Tutorial 2: post-training INT8 quantization, and importing a model quantized elsewhere (QDQ).

Run it with the project's venv: ``.venv/bin/python tutorials/02_quantize.py``.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

import compiler
from compiler import zoo

model = zoo.model_path("fmnist-resnet8")
data = zoo.bundled_slice()
work = tempfile.mkdtemp(prefix="squeeze-tutorial-")
shape = {"input": (1, 1, 28, 28)}

# 1. Calibrate on real images and realize INT8: u8 activations (per tensor, asymmetric) ×
#    s8 weights (per channel, symmetric) → int32, requantized with the fused ReLU.
config = compiler.QuantConfig("w8_sym_per_channel__a8_asym_per_tensor", calibration={"input": data["calib"]},
                              observer="entropy")
art = compiler.compile(model, "x86", input_shapes=shape, quantize=config)
int8 = compiler.load(art.save(os.path.join(work, "int8.tar")))
fp32 = compiler.load(compiler.compile(model, "x86", input_shapes=shape).save(os.path.join(work, "fp32.tar")))


def accuracy(module) -> float:
    x, y = data["test_x"], data["test_y"]
    return float(np.mean([module.run({"input": x[i:i + 1]})["output"].argmax() == y[i] for i in range(len(x))]))


acc_fp32, acc_int8 = accuracy(fp32), accuracy(int8)
print(f"top-1 on 1,000 test images: FP32 {acc_fp32:.3f}, INT8 {acc_int8:.3f}")
assert acc_int8 >= acc_fp32 - 0.01
layers = art.manifest.summary["layers"]
print("integer layers:", sum("int32" in row["dtype"] for row in layers), "of",
      sum(row["op"] in ("conv2d", "matmul") for row in layers))

# 2. The same from the command line, with a calibration .npz and a per-layer table.
np.savez(os.path.join(work, "calib.npz"), input=data["calib"])
cli = [sys.executable, "-m", "compiler.cli"]
subprocess.run(cli + ["compile", str(model), "--input-shape", "input:1x1x28x28", "--quantize", "int8",
                      "--calib", f"{work}/calib.npz", "--observer", "percentile", "-o", f"{work}/cli.tar"], check=True)
subprocess.run(cli + ["inspect", f"{work}/cli.tar"], check=True)

# 3. A model quantized by ONNX Runtime (QDQ format) compiles to the same integer IR.
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # noqa: E402


class Reader(CalibrationDataReader):
    def __init__(self):
        self.items = iter({"input": data["calib"][i:i + 1]} for i in range(64))

    def get_next(self):
        return next(self.items, None)


qdq = os.path.join(work, "qdq.onnx")
quantize_static(str(model), qdq, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
imported = compiler.load(compiler.compile(qdq, "x86", input_shapes=shape).save(os.path.join(work, "qdq.tar")))
print(f"QDQ model compiled to integers: top-1 {accuracy(imported):.3f}")
