"""Quantization accuracy of Squeeze's PTQ against FP32 and ONNX Runtime on real data.

Usage: ``python bench/quant.py [--quick] [--only fmnist,efficientnet,mobilenet] [--fmnist-configs int8,int4_log]``

* ``fmnist``: Fashion-MNIST ResNet-8 top-1 on the 10k test images, calibrated on the 256 bundled
  train images; Squeeze observers × schemes (and bias correction) against ORT ``quantize_static``
  (QDQ, per-channel u8/s8) with the same images and calibration method.
* ``efficientnet``: EfficientNet-Lite0 (ImageNet weights) on crops of real photos: top-1
  agreement with FP32 and top-5 containment (FP32 top-1 among the INT8 top-5).
* ``mobilenet``: MobileNetV2 (random weights, BN folded) output SQNR of per-tensor INT8 weights,
  with and without cross-layer equalization and bias correction.

Prints markdown tables and writes ``bench/results/quant.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TVM_NUM_THREADS", "2")

import compiler  # noqa: E402
from compiler import zoo  # noqa: E402
from compiler.zoo.photos import calibration_photos, photos  # noqa: E402
from compiler.sensitivity import sqnr_db  # noqa: E402
from quant_utils import ort_quantize_static  # noqa: E402

OBSERVERS = ("minmax", "percentile", "entropy", "mse")
ORT_METHODS = ("minmax", "percentile", "entropy")  # the observers ORT also has
# Fashion-MNIST rows: the schemes, and int8 with bias correction.
FMNIST_CONFIGS = {s: {"scheme": s} for s in ("int8", "int8_per_tensor", "int8_integer_only", "int4", "int4_log",
                                              "int8_pow2", "int4_log_shift")}
FMNIST_CONFIGS["int8 + bias_correction"] = {"scheme": "int8", "bias_correction": True}
FMNIST_CONFIGS["int8, no bias correction"] = {"scheme": "int8", "bias_correction": False}
FMNIST_CONFIGS["int8 + adaround"] = {"scheme": "int8", "adaround": True}
# Squeeze's percentile observer keeps 99.99 % by default; ORT's Percentile method 99.999 %.
OBSERVER_OPTIONS = {"percentile": {"percentile": 99.999}}
# "int8" is the default: per-layer ("auto") bias correction; "+ bias_correction" corrects every layer.
VARIANTS = {"int8": {}, "int8, no bias correction": {"bias_correction": False}, "int8 + equalize": {"equalize": True},
            "int8 + bias_correction": {"bias_correction": True}, "int8 + adaround": {"adaround": True}}


def squeeze_outputs(model: Path, images: np.ndarray, calib: np.ndarray, **config) -> np.ndarray:
    """Compile ``model`` with ``QuantConfig(calibration=calib, **config)``; first output per image."""
    options = OBSERVER_OPTIONS.get(config.get("observer", "minmax"), {})
    quant = compiler.QuantConfig(calibration={"input": calib}, observer_options=options, **config)
    art = compiler.compile(model, input_shapes={"input": (1, *images.shape[1:])}, quantize=quant)
    with tempfile.TemporaryDirectory() as tmp:
        art.save(Path(tmp) / "model.tar")
        module = compiler.load(Path(tmp) / "model.tar")
    return np.concatenate([next(iter(module.run({"input": images[i:i + 1]}).values()))
                           for i in range(len(images))])


def ort_outputs(model: Path, images: np.ndarray) -> np.ndarray:
    """First output of ``model`` under ONNX Runtime, one image at a time."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": images[i:i + 1]})[0] for i in range(len(images))])


def ort_int8_outputs(model: Path, images: np.ndarray, calib: np.ndarray, method: str) -> np.ndarray:
    """ORT ``quantize_static`` (QDQ, per-channel s8 weights, u8 activations) of ``model``, run."""
    with tempfile.TemporaryDirectory() as tmp:
        qdq = Path(tmp) / "qdq.onnx"
        ort_quantize_static(model, qdq, calib, method)
        return ort_outputs(qdq, images)


def agreement(reference: np.ndarray, outputs: np.ndarray) -> tuple[float, float, float]:
    """(top-1 agreement %, top-5 containment % of the reference top-1, logits SQNR dB)."""
    ref = reference.argmax(axis=1)
    top5 = np.argsort(-outputs, axis=1)[:, :5]
    return (round(100 * float(np.mean(outputs.argmax(axis=1) == ref)), 2),
            round(100 * float(np.mean((top5 == ref[:, None]).any(axis=1))), 2), round(sqnr_db(reference, outputs), 2))


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats printed with two decimals."""
    cells = [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def fmnist(quick: bool, only: list[str] | None = None) -> tuple[dict, str]:
    """ResNet-8 top-1: FP32, Squeeze observers × configurations (``only``: these), ORT per
    calibration method."""
    model = zoo.model_path("fmnist-resnet8")
    images, labels = zoo.fashion_mnist("test")
    if quick:
        images, labels = images[:2000], labels[:2000]
    calib = zoo.bundled_slice()["calib"]
    configs = {"int8": FMNIST_CONFIGS["int8"]} if quick else FMNIST_CONFIGS
    configs = {k: c for k, c in configs.items() if k == "int8" or only is None or k in only}
    acc = lambda out: round(100 * float(np.mean(out.argmax(axis=1) == labels)), 2)  # noqa: E731
    fp32 = acc(ort_outputs(model, images))
    result = {"images": len(images), "calibration": len(calib), "fp32": fp32,
              "ort": {m: acc(ort_int8_outputs(model, images, calib, m)) for m in ORT_METHODS},
              "squeeze": {k: {o: acc(squeeze_outputs(model, images, calib, observer=o, **c)) for o in OBSERVERS}
                          for k, c in configs.items()}}
    int8 = result["squeeze"]["int8"]
    result["bar"] = {m: int8[m] >= fp32 - 0.3 and int8[m] >= result["ort"][m] for m in ORT_METHODS}
    rows = [["FP32", *[fp32] * len(OBSERVERS)],
            ["ORT QDQ per-channel", *[result["ort"].get(o, "n/a") for o in OBSERVERS]]]
    rows += [[f"Squeeze {k}", *result["squeeze"][k].values()] for k in configs]
    text = (f"Fashion-MNIST ResNet-8, top-1 % on {len(images)} test images (calibration: {len(calib)} "
            f"train images)\n\n" + table(["", *OBSERVERS], rows) +
            "\n\nbar (int8 within 0.3 of FP32 and >= ORT, same observer): " +
            ", ".join(f"{m} {'pass' if ok else 'FAIL'}" for m, ok in result["bar"].items()))
    return result, text


def efficientnet(quick: bool) -> tuple[dict, str]:
    """EfficientNet-Lite0 on photo crops: agreement with FP32 for ORT and Squeeze configs."""
    model = zoo.model_path("efficientnet-lite0")
    images, calib = photos(), calibration_photos()
    reference = ort_outputs(model, images)
    methods = ORT_METHODS[:1] if quick else ORT_METHODS
    ort_rows = {f"ORT {m} per-channel": agreement(reference, ort_int8_outputs(model, images, calib, m))
                for m in methods}
    observers = ("minmax",) if quick else OBSERVERS
    squeeze_rows = {f"Squeeze {v}, {o}": agreement(reference, squeeze_outputs(model, images, calib, observer=o,
                                                                              **options))
                    for o in observers for v, options in VARIANTS.items()}
    baseline = ort_rows["ORT minmax per-channel"][0]
    passing = [k for k, (agree, top5, _) in squeeze_rows.items() if agree >= baseline and top5 == 100.0]
    result = {"images": len(images), "calibration": len(calib), "ort": ort_rows, "squeeze": squeeze_rows,
              "passing": passing}
    rows = [[k, *v] for k, v in {**ort_rows, **squeeze_rows}.items()]
    text = (f"EfficientNet-Lite0 on {len(images)} photo crops (calibration: {len(calib)} other crops)\n\n" +
            table(["", "top-1 agreement %", "top-5 containment %", "logits SQNR dB"], rows) +
            f"\n\nbar (agreement >= ORT default {baseline:.2f} %, top-5 100 %): " +
            (", ".join(passing) if passing else "no Squeeze configuration"))
    return result, text


def mobilenet(quick: bool) -> tuple[dict, str]:
    """MobileNetV2 output SQNR vs FP32 with per-tensor weights ± equalization / bias correction."""
    model = zoo.model_path("mobilenetv2")
    images, calib = photos(), calibration_photos()[::3]
    images = images[np.linspace(0, len(images) - 1, 8 if quick else 16).astype(int)]
    reference = ort_outputs(model, images)
    configs = {"int8 (per-channel)": {"scheme": "int8"},
               "int8_per_tensor": {"scheme": "int8_per_tensor"},
               "int8_per_tensor + equalize": {"scheme": "int8_per_tensor", "equalize": True},
               "int8_per_tensor + bias_correction": {"scheme": "int8_per_tensor", "bias_correction": True},
               "int8_per_tensor + both": {"scheme": "int8_per_tensor", "equalize": True, "bias_correction": True}}
    if quick:
        configs = {k: v for k, v in configs.items() if k != "int8 (per-channel)" and not k.endswith("both")}
    result = {name: round(sqnr_db(reference, squeeze_outputs(model, images, calib, **c)), 2)
              for name, c in configs.items()}
    text = (f"MobileNetV2 (random weights), output SQNR vs FP32 on {len(images)} photo crops "
            f"(calibration: {len(calib)} other crops, minmax)\n\n" +
            table(["", "SQNR dB"], [[k, v] for k, v in result.items()]))
    return {"images": len(images), "calibration": len(calib), "sqnr_db": result}, text


SECTIONS = {"fmnist": fmnist, "efficientnet": efficientnet, "mobilenet": mobilenet}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and configurations")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    parser.add_argument("--fmnist-configs", help=f"Fashion-MNIST rows to run (int8 always): {', '.join(FMNIST_CONFIGS)}")
    args = parser.parse_args()
    results = {"quick": args.quick}
    for name in args.only.split(","):
        start = time.time()
        extra = {"only": args.fmnist_configs.split(",")} if name == "fmnist" and args.fmnist_configs else {}
        results[name], text = SECTIONS[name](args.quick, **extra)
        results[name]["seconds"] = round(time.time() - start, 1)
        print(f"### {text}\n\n({results[name]['seconds']} s)\n", flush=True)
    out = ROOT / "bench" / "results" / ("quant.json" if not args.fmnist_configs else "quant_fmnist_subset.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
