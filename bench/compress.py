"""Deep Compression storage of ResNet-18: pruning, INT8, k-means weight sharing and Huffman coding.

Usage: ``python bench/compress.py [--clusters 16]``

ResNet-18 (``compiler.zoo``: torchvision's architecture, seeded random weights) as FP32 ONNX, then
compiled by Squeeze: INT8, INT8 + 50 % filter pruning, + k-means weight sharing (16 entries per
layer), + Huffman-coded weights. For each: artifact bytes, weight bytes (as stored), their ratio
to the FP32 ONNX model's, and top-1 agreement / top-5 containment / logits SQNR against FP32 (ONNX
Runtime) on crops of real photos (``compiler.zoo.photos``; calibration and the pruning re-fit use
other crops). The Huffman build must give bit-identical outputs to the same model with its
weights in the library.

Second section: the trained Fashion-MNIST ResNet-8 (bundled), top-1 on its 1000 bundled test images
with INT8 and k-means (the random ResNet-18's agreement says little about accuracy).

Prints markdown tables and writes ``bench/results/compress.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import compiler  # noqa: E402
from compiler import zoo  # noqa: E402
from compiler.compress import onnx_weight_bytes  # noqa: E402
from compiler.zoo.photos import calibration_photos, photos  # noqa: E402
from passes.prune import PruneConfig, prune_model  # noqa: E402
from quant import agreement, ort_outputs, table  # noqa: E402

GOAL = 20.0  # x smaller than the FP32 ONNX model at 50 % pruning + k-means + Huffman


def compiled(model, images: np.ndarray, **options) -> tuple[int, dict, np.ndarray]:
    """Artifact bytes, storage record and first output per image of ``model`` compiled with ``options``."""
    start = time.perf_counter()
    art = compiler.compile(model, input_shapes={"input": (1, *images.shape[1:])}, **options)
    with tempfile.TemporaryDirectory() as tmp:
        path = art.save(Path(tmp) / "model.tar")
        size = path.stat().st_size
        module = compiler.load(path)
    outputs = np.concatenate([next(iter(module.run({"input": images[i:i + 1]}).values()))
                              for i in range(len(images))])
    print(f"  compiled and ran in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return size, art.manifest.summary["storage"], outputs


def resnet18(k: int) -> tuple[dict, str]:
    """The size and agreement table of ResNet-18, from INT8 to 50 % pruning + k-means + Huffman."""
    model = zoo.model_path("resnet18")
    images, calib = photos(), {"input": calibration_photos()}
    reference = ort_outputs(model, images)
    onnx_bytes, weights = model.stat().st_size, onnx_weight_bytes(onnx.load(model))
    quant = compiler.QuantConfig("int8", calibration=calib)
    start = time.perf_counter()  # pruned (and re-fitted) once: what compile(prune=...) does first
    pruned = prune_model(model, PruneConfig("filter", 0.5, calibration=calib)).onnx
    print(f"pruned in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    configs = {"INT8": (model, {}), "INT8 + 50 % filters": (pruned, {}),
               f"+ k-means {k}": (pruned, {"compress": f"kmeans:{k}"}),
               "+ Huffman": (pruned, {"compress": f"kmeans:{k},huffman"}),
               # context: weight sharing without pruning, and a larger codebook
               f"INT8 + k-means {k} (no pruning)": (model, {"compress": f"kmeans:{k}"}),
               "INT8 + 50 % filters + k-means 64 + Huffman": (pruned, {"compress": "kmeans:64,huffman"})}
    rows = [["FP32 ONNX", onnx_bytes, weights, 1.0, 1.0, 100.0, 100.0, "inf"]]
    result = {"model": "resnet18", "images": len(images), "calibration": len(calib["input"]),
              "fp32_onnx": {"artifact_bytes": onnx_bytes, "weight_bytes": weights}, "configs": {}}
    outputs = {}
    for name, (source, options) in configs.items():
        print(name, file=sys.stderr)
        size, storage, outputs[name] = compiled(source, images, quantize=quant, **options)
        top1, top5, sqnr = agreement(reference, outputs[name])
        stored = storage["stored_weight_bytes"]
        result["configs"][name] = {"artifact_bytes": size, "weight_bytes": stored,
                                   "compiled_weight_bytes": storage["weight_bytes"],
                                   "artifact_ratio": round(onnx_bytes / size, 2),
                                   "weight_ratio": round(weights / stored, 2),
                                   "top1_agreement": top1, "top5_containment": top5, "sqnr_db": sqnr}
        rows.append([name, size, stored, round(onnx_bytes / size, 2), round(weights / stored, 2), top1, top5, sqnr])
    last = result["configs"]["+ Huffman"]
    result["huffman_bit_identical"] = bool(np.array_equal(outputs["+ Huffman"], outputs[f"+ k-means {k}"]))
    result["goal"] = {"x": GOAL, "artifact": last["artifact_ratio"] >= GOAL, "weights": last["weight_ratio"] >= GOAL}
    text = (f"ResNet-18 (random weights), {len(images)} photo crops (calibration and pruning re-fit: "
            f"{len(calib['input'])} other crops); agreement with FP32 ONNX Runtime\n\n" +
            table(["", "artifact bytes", "weight bytes", "artifact ratio", "weight ratio", "top-1 agreement %",
                   "top-5 containment %", "logits SQNR dB"], [[r[0], f"{r[1]:,}", f"{r[2]:,}", *r[3:]] for r in rows]) +
            f"\n\nHuffman build bit-identical to the k-means build: {result['huffman_bit_identical']}; "
            f"goal {GOAL:g}x: artifact {'pass' if result['goal']['artifact'] else 'FAIL'}, weights "
            f"{'pass' if result['goal']['weights'] else 'FAIL'}")
    return result, text


def fmnist(k: int) -> tuple[dict, str]:
    """Top-1 of the trained Fashion-MNIST ResNet-8 on the 1000 bundled test images, INT8 ± k-means."""
    model, data = zoo.model_path("fmnist-resnet8"), zoo.bundled_slice()
    x, y, calib = data["test_x"], data["test_y"], {"input": data["calib"]}
    quant = compiler.QuantConfig("int8", calibration=calib)
    configs = {"FP32": {}, "INT8": {"quantize": quant},
               **{f"INT8 + {c}": {"quantize": quant, "compress": c}
                  for c in (f"kmeans:{k},huffman", f"kmeans:{k}:per_channel,huffman", "kmeans:8,huffman")}}
    result, rows = {}, []
    for name, options in configs.items():
        size, storage, out = compiled(model, x, **options)
        result[name] = {"top1": round(100 * float(np.mean(out.argmax(axis=1) == y)), 2), "artifact_bytes": size,
                        "weight_bytes": storage["stored_weight_bytes"], "weight_ratio": storage["ratio"]}
        rows.append([name, result[name]["top1"], f"{size:,}", f"{storage['stored_weight_bytes']:,}", storage["ratio"]])
    return result, (f"Fashion-MNIST ResNet-8 (trained), top-1 % on the {len(y)} bundled test images\n\n" +
                    table(["", "top-1 %", "artifact bytes", "weight bytes", "weight ratio"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=16, help="k-means codebook entries per layer")
    args = parser.parse_args()
    results, texts = {}, []
    for name, section in (("resnet18", resnet18), ("fmnist", fmnist)):
        results[name], text = section(args.clusters)
        texts.append(text)
    print("\n\n".join(texts))
    out = ROOT / "bench" / "results" / "compress.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
