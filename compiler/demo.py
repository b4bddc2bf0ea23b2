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


def _ort_session(path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _accuracy(predict, images: np.ndarray, labels: np.ndarray) -> float:
    hits = sum(int(np.argmax(predict(images[i:i + 1])) == labels[i]) for i in range(len(images)))
    return hits / len(images)


def _interleaved_latency(runners: dict, x: np.ndarray, rounds: int = 7, per_round: int = 50) -> dict:
    """Median per-inference ms of each runner, alternating runners round by round."""
    samples = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                run(x)
            samples[name].append((time.perf_counter() - t0) * 1e3 / per_round)
    return {name: float(np.median(s)) for name, s in samples.items()}


def _compile(model, workdir: str, name: str, **options):
    t0 = time.perf_counter()
    art = compiler.compile(model, "x86", input_shapes={"input": (1, 1, 28, 28)}, **options)
    path = art.save(os.path.join(workdir, f"{name}.tar"))
    print(f"compiled {name} in {time.perf_counter() - t0:.1f} s ({path.stat().st_size / 1e3:.0f} KB)", flush=True)
    return compiler.load(path), path.stat().st_size


def main() -> int:
    threads = int(os.environ.get("TVM_NUM_THREADS", "2"))
    model = zoo.model_path("fmnist-resnet8")
    images, labels = zoo.fashion_mnist("test")
    calib = {"input": zoo.bundled_slice()["calib"]}
    print(f"model {model.name}, Fashion-MNIST test set: {len(images)} images, {threads} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, fp32_size = _compile(model, tmp, "fp32")
        int8, int8_size = _compile(model, tmp, "int8", quantize=compiler.QuantConfig("int8", calibration=calib))
    sess = _ort_session(model, threads)
    engines = {
        "Squeeze FP32": (lambda x: fp32.run({"input": x})["output"], fp32_size),
        "Squeeze INT8": (lambda x: int8.run({"input": x})["output"], int8_size),
        "ONNX Runtime FP32": (lambda x: sess.run(None, {"input": x})[0], model.stat().st_size),
    }
    latency = _interleaved_latency({k: v[0] for k, v in engines.items()}, images[:1])
    base = latency["ONNX Runtime FP32"]
    rows = [{
        "engine": name,
        "top1_%": round(100 * _accuracy(run, images, labels), 2),
        "latency_ms": round(latency[name], 4),
        "speed_vs_ORT": round(base / latency[name], 2),
        "size_KB": round(size / 1e3),
    } for name, (run, size) in engines.items()]
    print(format_table(rows, list(rows[0]), totals=False))
    print("latency: batch 1, median of interleaved rounds; speed_vs_ORT > 1 means faster than ONNX Runtime FP32;")
    print("size: the artifact (compiled library + manifest) for Squeeze, the .onnx file for ONNX Runtime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
