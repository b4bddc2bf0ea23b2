"""`make demo`: compile the bundled Fashion-MNIST ResNet-8, run the 10k test set, compare with ONNX Runtime."""
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


def main() -> int:
    threads = int(os.environ.get("TVM_NUM_THREADS", "2"))
    model = zoo.model_path("fmnist-resnet8")
    images, labels = zoo.fashion_mnist("test")
    print(f"model {model.name}, Fashion-MNIST test set: {len(images)} images, {threads} threads", flush=True)

    t0 = time.perf_counter()
    art = compiler.compile(model, "x86", input_shapes={"input": (1, 1, 28, 28)})
    compile_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = art.save(os.path.join(tmp, "fmnist_resnet8.tar"))
        size_kb = path.stat().st_size / 1e3
        module = compiler.load(path)
    print(f"compiled for x86 in {compile_s:.1f} s ({size_kb:.0f} KB artifact)", flush=True)

    sess = _ort_session(model, threads)
    engines = {
        "Squeeze FP32": lambda x: module.run({"input": x})["output"],
        "ONNX Runtime FP32": lambda x: sess.run(None, {"input": x})[0],
    }
    latency = _interleaved_latency(engines, images[:1])
    rows = []
    for name, run in engines.items():
        rows.append({
            "engine": name,
            "top1_%": round(100 * _accuracy(run, images, labels), 2),
            "latency_ms": round(latency[name], 4),
            "vs_ORT": round(latency["ONNX Runtime FP32"] / latency[name], 2),
            "model_KB": round(model.stat().st_size / 1e3) if "ONNX" in name else round(size_kb),
        })
    print(format_table(rows, list(rows[0]), totals=False))
    print("latency: batch 1, median of interleaved rounds; vs_ORT > 1 means faster than ONNX Runtime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
