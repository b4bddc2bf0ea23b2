"""`make demo`: compile the bundled Fashion-MNIST ResNet-8 to FP32 and INT8, run the 10k test set,
and compare accuracy, latency and size with ONNX Runtime on the same model."""
from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

import compiler
from compiler import zoo
from compiler.report import format_table
from compiler.timing import Engine, interleaved


def _ort_session(path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _accuracy(predict, images: np.ndarray, labels: np.ndarray) -> float:
    hits = sum(int(np.argmax(predict(images[i:i + 1])) == labels[i]) for i in range(len(images)))
    return hits / len(images)


def _compile(model, workdir: str, name: str, **options):
    t0 = time.perf_counter()
    art = compiler.compile(model, input_shapes={"input": (1, 1, 28, 28)}, **options)  # for this host
    path = art.save(os.path.join(workdir, f"{name}.tar"))
    print(f"compiled {name} in {time.perf_counter() - t0:.1f} s ({path.stat().st_size / 1e3:.0f} KB)", flush=True)
    return path


def main() -> int:
    threads = int(os.environ.get("TVM_NUM_THREADS", "2"))
    model = zoo.model_path("fmnist-resnet8")
    images, labels = zoo.fashion_mnist("test")
    calib = {"input": zoo.bundled_slice()["calib"]}
    print(f"model {model.name}, Fashion-MNIST test set: {len(images)} images, {threads} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"Squeeze FP32": _compile(model, tmp, "fp32"),
                 "Squeeze INT8": _compile(model, tmp, "int8",
                                          quantize=compiler.QuantConfig("int8", calibration=calib)),
                 "ONNX Runtime FP32": model}
        samples = interleaved({k: Engine(str(p)) for k, p in paths.items()}, {"input": images[:1]}, threads,
                              rounds=7, runs=50)
        fp32, int8 = compiler.load(paths["Squeeze FP32"]), compiler.load(paths["Squeeze INT8"])
        sizes = {k: p.stat().st_size for k, p in paths.items()}
    sess = _ort_session(model, threads)
    predict = {
        "Squeeze FP32": lambda x: fp32.run({"input": x})["output"],
        "Squeeze INT8": lambda x: int8.run({"input": x})["output"],
        "ONNX Runtime FP32": lambda x: sess.run(None, {"input": x})[0],
    }
    latency = {k: float(np.median(v)) for k, v in samples.items()}
    base = latency["ONNX Runtime FP32"]
    rows = [{
        "engine": name,
        "top1_%": round(100 * _accuracy(run, images, labels), 2),
        "latency_ms": round(latency[name], 4),
        "speed_vs_ORT": round(base / latency[name], 2),
        "size_KB": round(sizes[name] / 1e3),
    } for name, run in predict.items()]
    print(format_table(rows, list(rows[0]), totals=False))
    print("latency: batch 1, median of interleaved rounds, each engine in its own process (compiler.timing);")
    print("speed_vs_ORT > 1 means faster than ONNX Runtime FP32;")
    print("size: the artifact (compiled library + manifest) for Squeeze, the .onnx file for ONNX Runtime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
