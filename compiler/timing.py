"""Interleaved latency of several engines, each in its own worker process.

Engines disturb each other on a small machine: the thread pool of one (TVM's or ONNX
Runtime's) keeps spinning on the cores for a while after its run, while the next one runs.
Measured on this 2-core machine, ONNX Runtime INT8 ResNet-18 took 16.8 ms with three idle
TVM modules beside it (same process or not) and 4.7 ms alone. So every engine here gets a
worker process (``python -m compiler.timing --serve``) that loads the model, warms up and then
times calls when asked; the parent asks them in turn, round after round (order rotating),
and keeps every worker but the one asked stopped (``SIGSTOP``), spinning threads included.
A worker's first calls after the others ran are cold (weights evicted from the caches, thread
pool asleep): the pruned INT8 ResNet-18 took 1.6 and 1.35 ms for them against 1.12 ms steady,
so every turn starts with ``SETTLE`` untimed calls and the figures are steady-state latency.

Every engine is timed through its public Python API with numpy inputs and outputs
(``compiler.Module.run``, ONNX Runtime's ``InferenceSession.run``, OpenVINO's
``InferRequest.infer`` with the latency hint); an engine may name the Python its worker runs in
(OpenVINO lives in a venv of its own, beside the pinned one).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the folder holding the ``compiler`` package
WARMUP = 3  # untimed calls after loading
SETTLE = 2  # untimed calls at the start of every turn


@dataclass(frozen=True)
class Engine:
    """A model to time: a Squeeze artifact (``.tar``), an OpenVINO IR (``.xml``) or an ONNX model
    run by ONNX Runtime; ``python``: the interpreter of its worker (default: this one);
    ``precision``: OpenVINO's inference precision hint (default: the plugin's, bf16 for float
    layers on CPUs with AVX512_BF16, Zen 4 included; ``f32`` for true FP32)."""

    path: str
    python: str | None = None
    precision: str = ""

    @property
    def kind(self) -> str:
        return {".tar": "squeeze", ".xml": "openvino"}.get(Path(self.path).suffix, "ort")


def _runner(engine: Engine, threads: int):
    """A zero-argument call running ``engine`` once (worker side)."""
    if engine.kind == "squeeze":
        import compiler

        module = compiler.load(engine.path)
        return lambda inputs: module.run(inputs)
    if engine.kind == "openvino":
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if engine.precision:
            config["INFERENCE_PRECISION_HINT"] = engine.precision
        compiled = ov.Core().compile_model(engine.path, "CPU", config)
        request = compiled.create_infer_request()
        return lambda inputs: request.infer(inputs)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(engine.path, options, providers=["CPUExecutionProvider"])
    return lambda inputs: session.run(None, inputs)


def serve(engine: Engine, inputs_path: str, threads: int) -> None:
    """Worker loop: read a number of runs per line, answer the per-call milliseconds (JSON) of
    that many calls made after ``SETTLE`` untimed ones."""
    inputs = dict(np.load(inputs_path))
    run = _runner(engine, threads)
    for _ in range(WARMUP):
        run(inputs)
    print("ready", flush=True)
    for line in sys.stdin:
        for _ in range(SETTLE):
            run(inputs)
        times = []
        for _ in range(int(line)):
            start = time.perf_counter()
            run(inputs)
            times.append((time.perf_counter() - start) * 1e3)
        print(json.dumps(times), flush=True)


def interleaved(engines: dict[str, Engine], inputs: dict[str, np.ndarray], threads: int, rounds: int,
                runs: int, on_turn: Callable[[int, str, list[float]], None] | None = None) -> dict[str, list[float]]:
    """Per-round median milliseconds of every engine (``rounds`` values each).

    Each round times ``runs`` calls of each engine in turn, the order rotating by one per
    round; workers run with ``TVM_NUM_THREADS`` / ONNX Runtime intra-op threads = ``threads``.
    ``on_turn(round, engine name, per-call milliseconds)`` is called after every turn (progress,
    percentiles), with every worker stopped.
    """
    with tempfile.TemporaryDirectory(prefix="squeeze-timing-") as tmp:
        feed = os.path.join(tmp, "inputs.npz")
        np.savez(feed, **inputs)
        env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        workers = {name: subprocess.Popen([e.python or sys.executable, "-m", "compiler.timing", "--serve", e.path,
                                           feed, str(threads), *(["--precision", e.precision] if e.precision else [])],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                   for name, e in engines.items()}
        try:
            for name, worker in workers.items():  # each stopped as soon as it is ready
                if worker.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"timing worker for {name} ({engines[name].path}) failed to start")
                worker.send_signal(signal.SIGSTOP)
            order, samples = list(engines), {name: [] for name in engines}
            for r in range(rounds):
                for name in order[r % len(order):] + order[:r % len(order)]:
                    worker = workers[name]
                    worker.send_signal(signal.SIGCONT)
                    worker.stdin.write(f"{runs}\n")
                    worker.stdin.flush()
                    times = json.loads(worker.stdout.readline())
                    samples[name].append(statistics.median(times))
                    worker.send_signal(signal.SIGSTOP)
                    if on_turn is not None:
                        on_turn(r, name, times)
            return samples
        finally:
            for worker in workers.values():
                worker.send_signal(signal.SIGCONT)
                worker.stdin.close()
                worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=3, metavar=("MODEL", "INPUTS", "THREADS"), required=True)
    parser.add_argument("--precision", default="", help="OpenVINO inference precision hint")
    args = parser.parse_args()
    path, inputs, threads = args.serve
    serve(Engine(path, precision=args.precision), inputs, int(threads))


if __name__ == "__main__":
    main()
