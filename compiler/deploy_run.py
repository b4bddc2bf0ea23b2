"""Run a Squeeze model with the TVM runtime alone (``pip install apache-tvm apache-tvm-ffi numpy``).

This file is copied into deploy bundles as ``run.py`` (``squeeze export model.tar --board NAME``)
and imports neither Squeeze nor TVM's compiler::

    python run.py [--inputs x.npz] [--outputs y.npz] [--repeat 20]

It loads the library of this folder whose inputs have the shapes given (``manifest.json``; one
library per batch size), runs its Relax VM on the CPU, writes the outputs (one array per output
name) and prints the latency. Without ``--inputs`` it runs random inputs of the first batch size.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine

HERE = Path(__file__).resolve().parent


def fail(message: str) -> None:
    """Print one line and exit with status 2."""
    print(f"run.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def builds(manifest: dict) -> list[dict]:
    """``{"library", "inputs", "outputs"}`` of every batch size, the default first."""
    return manifest.get("batches") or [{"library": "lib.so", "inputs": manifest["inputs"],
                                        "outputs": manifest["outputs"]}]


def random_inputs(specs: list[dict]) -> dict[str, np.ndarray]:
    """Normal floats or small integers of the shapes and dtypes of ``specs``."""
    rng = np.random.default_rng(0)
    return {s["name"]: rng.standard_normal(s["shape"]).astype(s["dtype"]) if np.dtype(s["dtype"]).kind == "f"
            else rng.integers(0, 8, s["shape"]).astype(s["dtype"]) for s in specs}


def pick(manifest: dict, arrays: dict[str, np.ndarray]) -> dict:
    """The build whose inputs match ``arrays`` by name, shape and dtype."""
    names = [s["name"] for s in manifest["inputs"]]
    if sorted(arrays) != sorted(names):
        fail(f"the inputs are {sorted(arrays)}, the model takes {names}: give one array per input")
    for build in builds(manifest):
        if all(arrays[s["name"]].shape == tuple(s["shape"]) for s in build["inputs"]):
            for s in build["inputs"]:
                if arrays[s["name"]].dtype != np.dtype(s["dtype"]):
                    fail(f"input '{s['name']}' has dtype {arrays[s['name']].dtype}, the model expects {s['dtype']}")
            return build
    shapes = [{s["name"]: s["shape"] for s in b["inputs"]} for b in builds(manifest)]
    fail(f"input shapes {({n: list(a.shape) for n, a in arrays.items()})} match none the model holds: {shapes}")


def main() -> None:
    parser = argparse.ArgumentParser(description="run the model of this folder with the TVM runtime")
    parser.add_argument("--inputs", help=".npz with one array per model input (default: random inputs)")
    parser.add_argument("--outputs", help=".npz receiving one array per model output")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs (0: no timing)")
    args = parser.parse_args()
    manifest = json.loads((HERE / "manifest.json").read_text())
    arch = manifest["target"].get("arch", "")
    if arch and platform.machine() not in (arch, {"aarch64": "arm64", "x86_64": "AMD64"}.get(arch)):
        fail(f"the model is compiled for {arch}, this machine is {platform.machine()}: run it on the board")
    if args.inputs:
        try:
            with np.load(args.inputs) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError) as err:
            fail(f"cannot read {args.inputs} ({err}): give an .npz (numpy.savez) with one array per input")
    else:
        arrays = random_inputs(builds(manifest)[0]["inputs"])
    build = pick(manifest, arrays)
    device = tvm.cpu()
    vm = VirtualMachine(tvm.runtime.load_module(str(HERE / build["library"])), device)
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(arrays[s["name"]]), device) for s in build["inputs"]]
    if manifest.get("weights"):  # weights kept outside the library: main takes them after the inputs
        with np.load(HERE / "weights.npz") as npz:
            tensors += [tvm.runtime.tensor(npz[f"t{i}"], device)
                        for i in manifest["weights"]["params"][build["library"]]]
    result = vm["main"](*tensors)
    results = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
    outputs = {s["name"]: r.numpy() for s, r in zip(build["outputs"], results)}
    if args.outputs:
        out = Path(args.outputs).resolve()
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # renamed when complete
        with open(tmp, "wb") as f:
            np.savez(f, **outputs)
        os.replace(tmp, out)
        print(f"wrote {args.outputs}")
    for name, arr in outputs.items():
        print(f"{name}: shape {list(arr.shape)} {arr.dtype}")
    if args.repeat > 0:
        timer = vm.time_evaluator("main", device, number=1, repeat=args.repeat, min_repeat_ms=0)
        samples = [t * 1e3 for t in timer(*tensors).results]
        print(f"latency over {args.repeat} runs: median {statistics.median(samples):.3f} ms, "
              f"min {min(samples):.3f} ms, max {max(samples):.3f} ms")


if __name__ == "__main__":
    main()
