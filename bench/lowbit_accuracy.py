"""Top-1 of the QAT low-bit ResNet-8s (compiler/zoo/train_lowbit.py) in Squeeze and ONNX Runtime.

Usage: ``python bench/lowbit_accuracy.py [--out bench/results/lowbit_accuracy.json]``

On the 10000 Fashion-MNIST test images: torch's fake-quant accuracy (recorded by the training
script), Squeeze on the QONNX and on the QDQ export (x86, batch 1000), ONNX Runtime on the QDQ
export, and how many predictions Squeeze and ONNX Runtime disagree on. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from compiler.runtime import Module  # noqa: E402
from compiler.zoo import fashion_mnist  # noqa: E402

DATA = ROOT / "compiler" / "zoo" / "data"
CONFIGS = ("w1a1", "w2a8", "w2a2", "w4a4")
BATCH = 1000


def squeeze_classes(path: Path, x: np.ndarray) -> np.ndarray:
    """Squeeze's predicted classes of the model at ``path`` on ``x`` (batches of ``BATCH``)."""
    module = Module(compiler.compile(path, target="x86", input_shapes={"input": (BATCH, *x.shape[1:])}))
    return np.concatenate([module.run({"input": x[i:i + BATCH]})["output"].argmax(1) for i in range(0, len(x), BATCH)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lowbit_accuracy.json")
    args = parser.parse_args()
    x, y = fashion_mnist("test")
    recorded = json.loads((DATA / "fmnist_resnet8_lowbit.json").read_text())
    rows = {}
    print("| config | torch fake-quant | Squeeze QONNX | Squeeze QDQ | ORT QDQ | Squeeze ≠ ORT |")
    print("|---|---|---|---|---|---|")
    for cfg in CONFIGS:
        qdq = DATA / f"fmnist_resnet8_{cfg}.qdq.onnx"
        got = {fmt: squeeze_classes(DATA / f"fmnist_resnet8_{cfg}.{fmt}.onnx", x) for fmt in ("qonnx", "qdq")}
        sess = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"])
        ort_classes = sess.run(None, {"input": x})[0].argmax(1)
        rows[cfg] = {"torch": recorded[cfg]["torch_fake_quant_accuracy"],
                     **{f"squeeze_{fmt}": float(np.mean(c == y)) for fmt, c in got.items()},
                     "ort_qdq": float(np.mean(ort_classes == y)),
                     "squeeze_vs_ort_disagreements": int(np.sum(got["qdq"] != ort_classes))}
        r = rows[cfg]
        print(f"| {cfg} | {100 * r['torch']:.2f} | {100 * r['squeeze_qonnx']:.2f} | {100 * r['squeeze_qdq']:.2f} | "
              f"{100 * r['ort_qdq']:.2f} | {r['squeeze_vs_ort_disagreements']} of {len(y)} |", flush=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
