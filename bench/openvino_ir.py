"""OpenVINO IRs of an ONNX model for bench/vs_openvino.py: FP32, and INT8 by NNCF's default post-training quantization.

Usage (in a Python with ``openvino`` and ``nncf``, e.g. ``.cache/openvino-venv/bin/python``):
``python bench/openvino_ir.py model.onnx calib.npz OUT_DIR`` writes ``OUT_DIR/fp32.xml`` and
``OUT_DIR/int8.xml``; ``calib.npz`` holds one array of calibration samples for the model's single
input (leading sample axis), each fed as one batch-1 request, as ``nncf.quantize`` takes them. Only numpy,
openvino and nncf are imported: that venv has neither TVM nor onnx.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(model: str, calib: str, out_dir: str) -> None:
    import nncf
    import openvino as ov

    with np.load(calib) as data:
        images = data[data.files[0]]
    net = ov.Core().read_model(model)
    net.reshape({net.inputs[0].get_any_name(): [1, *images.shape[1:]]})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(net, out / "fp32.xml", compress_to_fp16=False)
    dataset = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    ov.save_model(nncf.quantize(net, dataset, subset_size=len(images)), out / "int8.xml", compress_to_fp16=False)


if __name__ == "__main__":
    main(*sys.argv[1:4])
