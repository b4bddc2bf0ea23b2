"""Per-call latency of the bundled 28x28 model (`make demo`): Squeeze INT8 and FP32 against ONNX
Runtime FP32, and where Squeeze's fixed cost per call goes.

Usage: ``python bench/overhead.py [--threads 2] [--rounds 7] [--runs 200] [--out FILE]``

The demo's timing path: each engine in its own worker process (:mod:`compiler.timing`), through
``compiler.Module.run`` and ``InferenceSession.run``, the median over interleaved rounds of each
round's median. Then, in this process, one Squeeze artifact at a time: ``Module.run``, the VM's
``main`` on the input buffers (the Python call into the VM) and the VM's own ``time_evaluator``
(VM dispatch and kernels, no Python); their differences are the Python side of ``run`` and the
cost of calling the VM. Prints a table and writes ``bench/results/overhead.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=200, help="calls per engine per round")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "overhead.json")
    return parser.parse_args()


ARGS = _args()
os.environ["TVM_NUM_THREADS"] = str(ARGS.threads)  # before TVM starts its thread pool

import numpy as np  # noqa: E402

import compiler  # noqa: E402
from compiler import zoo  # noqa: E402
from compiler.report import format_table  # noqa: E402
from compiler.timing import Engine, interleaved  # noqa: E402


def _per_call_us(call, number: int = 2000, repeat: int = 9) -> float:
    """Best of ``repeat`` batches of ``number`` calls, microseconds per call (the best: what is
    left of the fixed cost when other jobs on the machine do not interfere)."""
    for _ in range(100):
        call()
    batches = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            call()
        batches.append((time.perf_counter() - start) / number * 1e6)
    return min(batches)


def _components(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Best microseconds per call of ``Module.run``, of the VM's ``main`` called from Python and
    of the VM's ``time_evaluator``, and the thread count the module chose at load (in this process)."""
    module = compiler.load(path)
    build, args = module._arguments(inputs)
    timer = build.vm.time_evaluator("main", module.device, number=2000, repeat=9, min_repeat_ms=0)
    return {"run_us": _per_call_us(lambda: module.run(inputs)),
            "vm_call_us": _per_call_us(lambda: build.main(*args)),
            "vm_us": min(timer(*args).results) * 1e6,
            "threads": build.threads or ARGS.threads}


def _cpu() -> str:
    """The CPU's name from /proc/cpuinfo."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def _compile(model: Path, workdir: str, name: str, **options) -> Path:
    art = compiler.compile(model, input_shapes={"input": (1, 1, 28, 28)}, **options)
    return art.save(os.path.join(workdir, f"{name}.tar"))


def main() -> int:
    model = zoo.model_path("fmnist-resnet8")
    inputs = {"input": zoo.fashion_mnist("test")[0][:1]}
    calib = {"input": zoo.bundled_slice()["calib"]}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"Squeeze INT8": _compile(model, tmp, "int8", quantize=compiler.QuantConfig("int8", calibration=calib)),
                 "Squeeze FP32": _compile(model, tmp, "fp32"),
                 "ONNX Runtime FP32": model}
        samples = interleaved({k: Engine(str(p)) for k, p in paths.items()}, inputs, ARGS.threads,
                              rounds=ARGS.rounds, runs=ARGS.runs)
        parts = {k: _components(p, inputs) for k, p in paths.items() if k.startswith("Squeeze")}
    load.append(os.getloadavg()[0])
    latency = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    base = latency["ONNX Runtime FP32"]
    rows = []
    for name, us in latency.items():
        part = parts.get(name, {})
        rows.append({"engine": name, "per_call_us": round(us, 1), "vs_ORT_FP32": round(us / base, 2),
                     "threads": part.get("threads", ARGS.threads),
                     "python_us": round(part["run_us"] - part["vm_call_us"], 1) if part else "",
                     "vm_call_us": round(part["vm_call_us"] - part["vm_us"], 1) if part else "",
                     "vm_kernels_us": round(part["vm_us"], 1) if part else ""})
    print(format_table(rows, list(rows[0]), totals=False))
    print(f"per_call: median of {ARGS.rounds} interleaved rounds of {ARGS.runs} calls, {ARGS.threads} threads, "
          "each engine in its own process; vs_ORT_FP32 < 1 is faster. In this process, best of 9 x 2000 calls: "
          "python = Module.run minus the VM call, vm_call = calling main from Python minus time_evaluator, "
          "vm_kernels = time_evaluator; threads: what the module chose at load here (ORT: intra-op threads)")
    ARGS.out.parent.mkdir(parents=True, exist_ok=True)
    ARGS.out.write_text(json.dumps({
        "model": model.name, "threads": ARGS.threads, "rounds": ARGS.rounds, "runs": ARGS.runs,
        "cpu": _cpu(), "loadavg_before_after": load,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows,
        "rounds_ms": samples}, indent=2) + "\n")
    print(f"{_cpu()}, load {load[0]:.2f} before, {load[1]:.2f} after; wrote {ARGS.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
