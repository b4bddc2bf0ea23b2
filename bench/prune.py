"""Structured pruning, block and N:M sparsity: accuracy without fine-tuning, and measured speed-ups.

Usage: ``python bench/prune.py [--quick] [--only fmnist,fmnist_sensitivity,resnet18,efficientnet,dense]``

* ``fmnist``: Fashion-MNIST ResNet-8 top-1 on the 10k test images after pruning, for every
  criterion × ratio with and without least-squares reconstruction (calibration: 1024 train
  images), evaluated with ONNX Runtime on the exported pruned models.
* ``fmnist_sensitivity``: sensitivity-derived per-layer ratios removing 50 % of the MACs, scored
  by output error on calibration samples or by cross-entropy on 5000 other (labelled) train images
  followed by a local search, each compiled by Squeeze and evaluated on its artifact.
* ``resnet18``: 50 % of the filters (L1, ``round_to=16``): FP32 and INT8 latency of Squeeze before
  and after, against the MAC reduction (ORT FP32 on both models, interleaved, for reference).
* ``efficientnet``: EfficientNet-Lite0, 30 % of the filters (ThiNet selection, re-fitted on calibration
  crops) + INT8 (bias-corrected): top-1 agreement and top-5 containment with the unpruned FP32 model on photo crops.
* ``dense``: a 1024×1024 dense layer at 80 % block sparsity (1×16 and 4×4 blocks, BSR kernel) and
  at 2:4 (N:M kernel on one or two rows, dense beyond) against the same layer dense (Squeeze and
  ORT), batch 1 and 16.

Timings interleave the engines in rounds, each engine in its own worker process
(:mod:`compiler.timing`; medians over rounds).
Prints markdown tables and writes ``bench/results/prune.json``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TVM_NUM_THREADS", "2")
THREADS = int(os.environ["TVM_NUM_THREADS"])

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import compiler  # noqa: E402
from compiler import zoo  # noqa: E402
from compiler.zoo.photos import calibration_photos, photos  # noqa: E402
from passes.prune import PruneConfig, prune_model  # noqa: E402
from quant import agreement, table  # noqa: E402
from compiler.timing import Engine, interleaved  # noqa: E402

CRITERIA = ("l1", "l2", "fpgm", "apoz", "variance", "reconstruction", "random")  # bn_scale: BN folded
RATIOS = (0.3, 0.5)
SEARCH_STEPS = 8  # local-search moves after the validation-scored sensitivity allocation


def session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def load(art) -> compiler.Module:
    path = Path(tempfile.mkdtemp()) / "model.tar"
    return compiler.load(art.save(path))


def timed(engines: dict[str, object], inputs: dict[str, np.ndarray], rounds: int, runs: int) -> dict[str, float]:
    """Median ms per engine (Squeeze artifacts or ONNX models), each in its own worker process."""
    with tempfile.TemporaryDirectory(prefix="squeeze-prune-bench-") as work:
        paths = {}
        for i, (name, engine) in enumerate(engines.items()):
            if isinstance(engine, onnx.ModelProto):
                path = Path(work) / f"{i}.onnx"
                onnx.save(engine, path)
            else:
                path = engine.save(Path(work) / f"{i}.tar")
            paths[name] = Engine(str(path))
        samples = interleaved(paths, inputs, THREADS, rounds, runs)
    return {k: round(float(np.median(v)), 3) for k, v in samples.items()}


@functools.cache  # shared by the fmnist and fmnist_sensitivity sections
def _fmnist_data() -> dict:
    """The model, test set, 1024 calibration and 5000 other (labelled) train images, ORT top-1."""
    images, labels = zoo.fashion_mnist("test")
    train, train_labels = zoo.fashion_mnist("train")
    calib_index = np.random.default_rng(0).choice(len(train), 1024, replace=False)
    held_out = np.random.default_rng(1).choice(np.setdiff1d(np.arange(len(train)), calib_index), 5000, replace=False)

    def acc(out: np.ndarray) -> float:
        return round(100 * float(np.mean(out.argmax(axis=1) == labels)), 2)

    def ort_top1(proto) -> float:
        sess = session(proto)
        return acc(np.concatenate([sess.run(None, {"input": images[i:i + 1000]})[0] for i in range(0, len(images), 1000)]))

    model = zoo.model_path("fmnist-resnet8")
    return {"model": model, "images": images, "acc": acc, "ort_top1": ort_top1, "fp32": ort_top1(model),
            "calib": {"input": train[calib_index]}, "shapes": {"input": (1, 1, 28, 28)},
            "validation": {"input": train[held_out], "labels": train_labels[held_out]}}


def fmnist(quick: bool) -> tuple[dict, str]:
    d = _fmnist_data()
    criteria = ("l1", "reconstruction") if quick else CRITERIA
    rows, result = [], {"fp32": d["fp32"], "table": {}}
    for crit in criteria:
        row = [crit]
        for ratio in RATIOS:
            for refit in (False, True):
                config = PruneConfig("filter", ratio, crit, calibration=d["calib"], reconstruct=refit, max_samples=1024)
                start = time.perf_counter()
                pruned = prune_model(d["model"], config, d["shapes"])
                top1 = d["ort_top1"](pruned.onnx)
                s = pruned.summary
                result["table"][f"{crit}/{ratio}/{'refit' if refit else 'plain'}"] = {
                    "top1": top1, "macs_kept": round(s["macs_after"] / s["macs_before"], 3),
                    "seconds": round(time.perf_counter() - start, 1)}
                row.append(top1)
        rows.append(row)
    macs = {r: result["table"][f"{criteria[0]}/{r}/plain"]["macs_kept"] for r in RATIOS}
    header = ["criterion"] + [f"{int(r * 100)}% filters ({100 * (1 - macs[r]):.0f}% MACs) {k}"
                              for r in RATIOS for k in ("plain", "+ reconstruction")]
    text = (f"Fashion-MNIST ResNet-8 top-1 % on {len(d['images'])} test images (FP32 {d['fp32']}); no fine-tuning; "
            f"calibration 1024 train images\n\n" + table(header, rows))
    return result, text


def fmnist_sensitivity(quick: bool) -> tuple[dict, str]:
    d = _fmnist_data()
    images = d["images"]

    def compiled_top1(config: PruneConfig) -> dict:
        start = time.perf_counter()
        art = compiler.compile(d["model"], input_shapes=d["shapes"], prune=config)
        seconds = time.perf_counter() - start
        module = load(art)
        out = np.concatenate([next(iter(module.run({"input": images[i:i + 1]}).values())) for i in range(len(images))])
        s = art.manifest.summary["prune"]
        return {"top1": d["acc"](out), "macs_removed": round(1 - s["macs_after"] / s["macs_before"], 4),
                "groups": [f"{g['kept']}/{g['size']}" for g in s["groups"]], "compile_s": round(seconds, 1)}

    sensitivity = dict(granularity="filter", ratio="sensitivity", criterion="reconstruction", calibration=d["calib"],
                       macs_target=0.5, max_samples=1024)
    steps = 0 if quick else SEARCH_STEPS
    runs = {"output error on calibration samples": PruneConfig(**sensitivity),
            f"validation cross-entropy (5000 other train images), up to {steps} search steps":
                PruneConfig(**sensitivity, validation=d["validation"], search_steps=steps)}
    result = {name: compiled_top1(config) for name, config in runs.items()}
    lines = [f"- scored by {name}: top-1 {r['top1']} % ({r['top1'] - d['fp32']:+.2f}) with "
             f"{100 * r['macs_removed']:.2f} % fewer MACs, kept {', '.join(r['groups'])}; compile {r['compile_s']} s"
             for name, r in result.items()]
    return result, ("Fashion-MNIST ResNet-8, sensitivity-derived ratios removing 50 % of the MACs (criterion "
                    "reconstruction, re-fitted on 1024 train images), compiled by Squeeze:\n" + "\n".join(lines))


def resnet18(quick: bool) -> tuple[dict, str]:
    model = zoo.model_path("resnet18")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    calib = {"input": np.random.default_rng(1).standard_normal((8, 3, 224, 224)).astype(np.float32)}
    config = PruneConfig("filter", 0.5, "l1", round_to=16)
    pruned = prune_model(model, config)
    s = pruned.summary
    mac_ratio = s["macs_before"] / s["macs_after"]
    quant = compiler.QuantConfig("int8", calibration=calib)
    arts = {"fp32": compiler.compile(model), "fp32 pruned": compiler.compile(model, prune=config),
            "int8": compiler.compile(model, quantize=quant), "int8 pruned": compiler.compile(model, prune=config, quantize=quant)}
    engines = {**arts, "ort fp32": onnx.load(model), "ort fp32 pruned": pruned.onnx}
    ms = timed(engines, {"input": x}, rounds=4 if quick else 10, runs=5)
    speed = {k: round(ms[k] / ms[f"{k} pruned"], 2) for k in ("fp32", "int8", "ort fp32")}
    result = {"macs_before": s["macs_before"], "macs_after": s["macs_after"], "mac_reduction": round(mac_ratio, 2),
              "ms": ms, "speedup": speed,
              "within_20pct": {k: v >= 0.8 * mac_ratio for k, v in speed.items()}}
    rows = [[k, ms[k], ms[f"{k} pruned"], speed[k], "yes" if result["within_20pct"][k] else "no"]
            for k in ("fp32", "int8", "ort fp32")]
    text = (f"ResNet-18, 50 % filters (L1, round_to=16): MACs {s['macs_before'] / 1e9:.2f} G -> "
            f"{s['macs_after'] / 1e9:.2f} G ({mac_ratio:.2f}x fewer)\n\n" +
            table(["engine", "dense ms", "pruned ms", "speed-up", "within 20 % of MAC reduction"], rows))
    return result, text


def efficientnet(quick: bool) -> tuple[dict, str]:
    model = zoo.model_path("efficientnet-lite0")
    images, calib = photos(), calibration_photos()
    sess = session(model)
    reference = np.concatenate([sess.run(None, {"input": images[i:i + 1]})[0] for i in range(len(images))])
    feed = {"input": calib}
    rows, result = [], {"images": len(images), "calibration": len(calib)}
    variants = {
        "FP32, 30 % filters": dict(prune=PruneConfig("filter", 0.3, "reconstruction", calibration=feed)),
        "INT8 (no pruning)": dict(quantize=compiler.QuantConfig("int8", calibration=feed, bias_correction=True)),
        "30 % filters + INT8": dict(prune=PruneConfig("filter", 0.3, "reconstruction", calibration=feed),
                                    quantize=compiler.QuantConfig("int8", calibration=feed, bias_correction=True)),
    }
    for name, options in variants.items():
        module = load(compiler.compile(model, **options))
        out = np.concatenate([next(iter(module.run({"input": images[i:i + 1]}).values())) for i in range(len(images))])
        result[name] = agreement(reference, out)
        rows.append([name, *result[name]])
    text = (f"EfficientNet-Lite0 (ImageNet weights) on {len(images)} photo crops, against unpruned FP32 "
            f"(calibration / reconstruction: {len(calib)} other crops)\n\n" +
            table(["", "top-1 agreement %", "top-5 containment %", "logits SQNR dB"], rows))
    return result, text


def dense_layer(rows: int, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((1024, 1024)) * 0.03).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["output"])], "dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [rows, 1024])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [rows, 1024])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(1024, np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def dense(quick: bool) -> tuple[dict, str]:
    result, rows = {}, []
    for m in (1, 16):
        model = dense_layer(m)
        x = {"input": np.random.default_rng(1).standard_normal((m, 1024)).astype(np.float32)}
        engines = {"squeeze dense": compiler.compile(model), "ort dense": model}
        modules = {"squeeze dense": load(engines["squeeze dense"])}
        configs = {"squeeze bsr 1x16": PruneConfig("block", 0.8, block=(1, 16)),
                   "squeeze bsr 4x4": PruneConfig("block", 0.8, block=(4, 4)),
                   "squeeze nm 2:4": PruneConfig("nm", nm=(2, 4))}
        for name, config in configs.items():
            engines[name] = compiler.compile(model, prune=config)
            modules[name] = load(engines[name])
            sparse = next(iter(modules[name].run(x).values()))
            expected = session(prune_model(model, config).onnx).run(None, x)[0]
            assert np.abs(sparse - expected).max() <= 1e-4 * np.abs(expected).max(), "BSR output differs"
        ms = timed(engines, x, rounds=5 if quick else 20, runs=50)
        vm = {k: m.benchmark(x, repeat=200, warmup=200)["median_ms"] for k, m in modules.items()}
        result[f"batch {m}"] = {"api_ms": ms, "vm_ms": vm}
        for k in ms:
            if k in configs:
                rows.append([m, k, ms[k], ms["squeeze dense"], round(ms["squeeze dense"] / ms[k], 2),
                             ms["ort dense"], round(ms["ort dense"] / ms[k], 2),
                             f"{vm[k]:.4f} / {vm['squeeze dense']:.4f} ({vm['squeeze dense'] / vm[k]:.1f}x)"])
    text = ("1024×1024 dense layer (+ bias), 80 % block sparsity: median ms per call through the Python API "
            "(engines interleaved), and in the VM alone (time_evaluator)\n\n" +
            table(["batch", "kernel", "sparse ms", "Squeeze dense ms", "speed-up", "ORT dense ms", "vs ORT",
                   "VM sparse / dense ms"], rows))
    return result, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer criteria and rounds")
    parser.add_argument("--only", default="fmnist,fmnist_sensitivity,resnet18,efficientnet,dense")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prune.json")
    args = parser.parse_args()
    sections = {"fmnist": fmnist, "fmnist_sensitivity": fmnist_sensitivity, "resnet18": resnet18,
                "efficientnet": efficientnet, "dense": dense}
    results = {}
    for name in args.only.split(","):
        start = time.perf_counter()
        results[name], text = sections[name](args.quick)
        results[name]["bench_seconds"] = round(time.perf_counter() - start)
        print(text + "\n", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.write_text(json.dumps({**previous, **results, "date": time.strftime("%Y-%m-%d")}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
