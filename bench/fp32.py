"""FP32 latency of Squeeze (untuned and MetaSchedule-tuned) against ONNX Runtime.

Usage: ``python bench/fp32.py [--models resnet18,mobilenetv2,efficientnet-lite0]
[--trials N] [--db DIR] [--rounds R] [--runs K]``

Batch 1, ``--threads`` threads for every engine (TVM_NUM_THREADS, ORT intra-op threads).
The engines run interleaved, each in its own worker process (:mod:`compiler.timing`): each round
times ``--runs`` inferences of every engine in turn (the order rotates per round), so that
load changes on a shared machine hit all engines alike; the table reports the median over
rounds of each round's median. Every engine's output is first
checked against ORT. ``--trials N`` tunes each model into ``DIR/<model>`` (reusing and
extending a database already there) and adds a "tuned" column; with ``--trials 0`` an
existing ``--db`` is only applied. Prints a markdown table and writes
``bench/results/fp32.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenetv2,efficientnet-lite0")
    parser.add_argument("--trials", type=int, default=0, help="MetaSchedule trials per model (0: no tuning)")
    parser.add_argument("--db", type=Path, help="directory of per-model tuning databases")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=10, help="inferences per engine per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fp32.json")
    args = parser.parse_args()
    if args.trials and args.db is None:
        parser.error("--trials needs --db")
    return args


ARGS = _args()
os.environ["TVM_NUM_THREADS"] = str(ARGS.threads)  # before TVM starts its thread pool

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402

import compiler  # noqa: E402
from compiler import zoo  # noqa: E402
from compiler.frontend import import_onnx  # noqa: E402
from compiler.pipeline import Recipe, run_passes  # noqa: E402
from compiler.tune import tune  # noqa: E402
from targets import get_target  # noqa: E402
from compiler.timing import Engine, interleaved  # noqa: E402

TOLERANCE = 1e-4  # max |out - ORT| relative to max |ORT|


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def squeeze_artifact(path: Path, database: Path | None, out: Path) -> tuple[Path, float]:
    """Compile ``path`` for this host (with ``database`` if given) to ``out``; returns it and the seconds."""
    start = time.perf_counter()
    art = compiler.compile(path, "x86", tuning_db=database)
    seconds = time.perf_counter() - start
    return art.save(out), seconds


def bench_model(name: str, spec, work: Path) -> dict:
    """Compile, check and time one zoo model; returns its JSON record."""
    path = zoo.model_path(name)
    program = run_passes(import_onnx(path), Recipe.cleanups())
    shape = program.inputs[0].shape
    feed = {program.inputs[0].name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    record = {"model": name, "input_shape": list(shape), "engines": {"ort": {}}}
    engines = {"ort": Engine(str(path))}
    database = ARGS.db / name if ARGS.db else None
    variants = {"untuned": None}
    if database is not None and (ARGS.trials or database.is_dir()):
        if ARGS.trials:
            start = time.perf_counter()
            tune(program, spec, database, ARGS.trials, progress=True)
            record["tuning"] = {"trials": ARGS.trials, "seconds": round(time.perf_counter() - start)}
        variants["tuned"] = database
    for engine, db in variants.items():
        artifact, seconds = squeeze_artifact(path, db, work / f"{name}.{engine}.tar")
        out = next(iter(compiler.load(artifact).run(feed).values()))
        error = float(np.abs(out - reference).max() / np.abs(reference).max())
        if error > TOLERANCE:
            raise SystemExit(f"{name}/{engine}: output differs from ORT (relative error {error:.2e})")
        engines[engine] = Engine(str(artifact))
        record["engines"][engine] = {"compile_s": round(seconds, 1), "rel_error": error,
                                     **({"database": str(db)} if db else {})}

    samples = interleaved(engines, feed, ARGS.threads, ARGS.rounds, ARGS.runs)
    ort_ms = float(np.median(samples["ort"]))
    for engine, per_round in samples.items():
        median = float(np.median(per_round))
        record["engines"][engine].update(
            median_ms=round(median, 3),
            p10_ms=round(float(np.percentile(per_round, 10)), 3),
            p90_ms=round(float(np.percentile(per_round, 90)), 3),
            vs_ort=round(median / ort_ms, 2),
        )
    return record


def table(records: list[dict]) -> str:
    """Markdown table: model, ORT ms, untuned ms (× ORT), tuned ms (× ORT), tuning budget."""
    lines = ["| model | ORT FP32 ms | Squeeze untuned ms (× ORT) | Squeeze tuned ms (× ORT) | tuning |",
             "|---|---|---|---|---|"]
    for rec in records:
        e = rec["engines"]
        cell = lambda k: f"{e[k]['median_ms']:.2f} ({e[k]['vs_ort']:.2f}×)" if k in e else "–"  # noqa: E731
        tuning = rec.get("tuning")
        budget = f"{tuning['trials']} trials, {tuning['seconds']} s" if tuning else (
            "existing database" if "tuned" in e else "–")
        lines.append(f"| {rec['model']} | {e['ort']['median_ms']:.2f} | {cell('untuned')} | {cell('tuned')} | {budget} |")
    return "\n".join(lines)


def main() -> None:
    spec = get_target("x86")
    with tempfile.TemporaryDirectory(prefix="squeeze-fp32-bench-") as work:
        records = [bench_model(name, spec, Path(work)) for name in ARGS.models.split(",")]
    result = {
        "machine": {"cpu": cpu_model(), "llvm_cpu": spec.target_json.get("mcpu"), "threads": ARGS.threads,
                    "date": time.strftime("%Y-%m-%d")},
        "versions": {"tvm": tvm.__version__, "onnxruntime": ort.__version__},
        "protocol": {"rounds": ARGS.rounds, "runs_per_round": ARGS.runs, "batch": 1},
        "models": records,
    }
    ARGS.out.parent.mkdir(parents=True, exist_ok=True)
    ARGS.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(records))
    print(f"\n{result['machine']['cpu']}, {ARGS.threads} threads, {result['machine']['date']}; wrote {ARGS.out}")


if __name__ == "__main__":
    main()
