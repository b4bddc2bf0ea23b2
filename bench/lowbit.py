"""Below 8 bits on x86: bit-serial layers against the VNNI int8 kernel and ONNX Runtime INT8.

Usage: ``python bench/lowbit.py [--layers conv3x3-256-28,...] [--bits a1wb,a2w2,...] [--rounds 9]
[--threads 2] [--out bench/results/lowbit.json]``, or ``--arm rpi5`` for the ARM estimate.

Each layer is a one-layer QONNX model (``Quant`` on the input at ``A`` unsigned bits, weights
through ``BipolarQuant`` (``wb``) or a ``W``-bit ``Quant``, an 8-bit output quantizer), imported
and compiled by Squeeze for this host with the bit-serial kernels allowed for every bit width
(the crossover is what is measured, not what the target declares), so each row runs the
bit-serial kernel; ``a8w8`` is the same layer at 8 bits compiled for the host target as is
(the int8 kernel), and ``a8w4`` with 4-bit weights, likewise (``vnni_w4``: weights two per
byte); ONNX Runtime runs the 8-bit layer's Q/DQ form. Every engine runs in its own worker
process, interleaved (:mod:`compiler.timing`); the table gives medians over rounds and the
speed-up over int8. A second table gives the layer's own kernel (``Module.profile``: the fused
conv/matmul kernel alone, without the model's input and output conversions, which both share;
median of ``--profiles`` runs),
and the instruction limits of this CPU: ``bench/vnni_peak.c`` (``vpdpbusd``) and
``bench/popcnt_peak.c`` (the bit-serial step ``vpandq + vpopcntq + vpaddq``).

``--arm BOARD`` estimates the same table for an ARM board without one (static, not measured):
each layer (at ``ARM_SIZE`` pixels a side, to keep the emulation short) is lowered for the
board, bit-serial or, for ``a8w8``, on its int8 kernel (``sdot`` on a Raspberry Pi 5), run once
under ``qemu-aarch64`` to count each basic block's executions, and each block is costed by
``llvm-mca`` for the board's core (``bench/arm_estimate.py``); the layer's cycles are the sum.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The kernel profiles run in this process: without this, TVM's thread pool pins the main thread to
# one core, and every later run here (profiles, the peak probes) shares that core.
os.environ.setdefault("TVM_BIND_THREADS", "0")

from compiler.timing import Engine, interleaved  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from int8_x86 import peak  # noqa: E402

DOMAIN = "qonnx.custom_op.general"
LAYERS = {  # name -> (kind, in channels, out channels, kernel, spatial size)
    "conv3x3-256-28": ("conv", 256, 256, 3, 28),
    "conv3x3-128-28": ("conv", 128, 128, 3, 28),
    "conv3x3-64-56": ("conv", 64, 64, 3, 56),
    "conv1x1-256-28": ("conv", 256, 256, 1, 28),
    "conv3x3-512-7": ("conv", 512, 512, 3, 7),
    "dense-4096": ("dense", 4096, 4096, 1, 1),
}
BITS = ("a8w4", "a1wb", "a1w2", "a2wb", "a2w2", "a3w3", "a4w4")
RUNS_PER_ROUND = 20
ARM_SIZE = 8


def _parse_bits(label: str) -> tuple[int, int | str]:
    a, w = label[1:].split("w")
    return int(a), ("b" if w == "b" else int(w))


def layer_model(kind: str, c: int, o: int, k: int, hw: int, abits: int, wbits) -> onnx.ModelProto:
    """A one-layer QONNX model: input ``Quant`` (unsigned), quantized weights, 8-bit output."""
    rng = np.random.default_rng(0)
    inits: list = []

    def init(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def quant(x: str, out: str, scale, bits: int, signed: int, narrow: int = 0) -> onnx.NodeProto:
        args = [init(f"{out}_s", scale), init(f"{out}_z", 0.0), init(f"{out}_b", bits)]
        return helper.make_node("Quant", [x, *args], [out], name=out, domain=DOMAIN, signed=signed, narrow=narrow)

    shape_w = (o, c, k, k) if kind == "conv" else (c, o)
    init("w", rng.standard_normal(shape_w))
    nodes = [quant("input", "xq", 0.5, abits, 0)]
    if wbits == "b":
        nodes.append(helper.make_node("BipolarQuant", ["w", init("ws", 0.02)], ["wq"], name="wq", domain=DOMAIN))
    else:
        nodes.append(quant("w", "wq", 0.3, wbits, 1, narrow=int(wbits > 2)))
    if kind == "conv":
        nodes.append(helper.make_node("Conv", ["xq", "wq"], ["y"], name="layer", pads=[k // 2] * 4))
        shape_in, shape_out = [1, c, hw, hw], [1, o, hw, hw]
    else:
        nodes.append(helper.make_node("MatMul", ["xq", "wq"], ["y"], name="layer"))
        shape_in, shape_out = [1, c], [1, o]
    nodes.append(quant("y", "output", 0.05, 8, 1))
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape_in)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape_out)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1)])


def _spec(board: str = "x86"):
    """Target ``board`` (default: this host) with bit-serial kernels for any bits up to 4 × 4."""
    from targets import get_target, integer
    from targets.arm.intrin import ISAS as ARM_ISAS
    from targets.x86 import BITSERIAL, ISAS

    spec = get_target(board)
    isa = integer.select_isa(spec.features, ISAS if board == "x86" else ARM_ISAS)
    anywhere = dataclasses.replace(BITSERIAL, rules=(integer.BitSerialRule(("conv2d", "matmul"), 16),),
                                   word=64 if board == "x86" else 16)
    return dataclasses.replace(spec, legalize=integer.legalize(isa, spec.integer_ops, bitserial=anywhere))


def prepare(layer: str, bits: list[str], work: Path, log) -> dict[str, tuple[str, str]]:
    """Artifacts (and the ORT model) of one layer: ``{engine: (path, kernel)}``."""
    import compiler
    from compiler.qonnx import lower_quantizers

    kind, c, o, k, hw = LAYERS[layer]
    spec, engines = _spec(), {}
    for label in ("a8w8", *bits):
        abits, wbits = _parse_bits(label)
        model = layer_model(kind, c, o, k, hw, abits, wbits)
        path = work / f"{layer}-{label}.onnx"
        onnx.save(model, path)
        start = time.perf_counter()
        art = compiler.compile(path, target=spec if abits < 8 else "x86")
        art.save(work / f"{layer}-{label}.tar")
        kernels = [v["kernel"] for v in art.manifest.summary.get("kernels", {}).values()
                   if v["kernel"].startswith(("int8", "bitserial"))]
        log(f"  {layer} {label}: compiled in {time.perf_counter() - start:.1f} s, kernel {', '.join(kernels)}")
        engines[label] = (str(work / f"{layer}-{label}.tar"), ", ".join(kernels))
        if label == "a8w8":
            onnx.save(lower_quantizers(model), work / f"{layer}-ort.onnx")
            engines["ort_int8"] = (str(work / f"{layer}-ort.onnx"), "onnxruntime QDQ")
    return engines


def arm_estimate(board: str, layers: list[str], bits: list[str], mca: str) -> dict:
    """Estimated cycles of each layer × bits on ``board`` (see the module docstring)."""
    sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]
    import arm_emu
    from arm_estimate import block_costs, disassemble, owner, profile

    from compiler.api import prepare as passes
    from compiler.build import lower
    from targets import get_target

    out = {}
    for layer in layers:
        kind, c, o, k, hw = LAYERS[layer]
        hw = min(hw, ARM_SIZE)
        shape = (1, c, hw, hw) if kind == "conv" else (1, c)
        x = np.random.default_rng(1).uniform(0, 1.5, shape).astype(np.float32)
        out[layer] = {}
        for label in ("a8w8", *bits):
            spec = get_target(board) if label.startswith("a8") else _spec(board)
            model = layer_model(kind, c, o, k, hw, *_parse_bits(label))
            mod = lower(next(iter(passes(model, spec).values())), spec)
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                (work / "plan.bin").write_bytes(arm_emu.plan(mod, [x])[0])
                lib = arm_emu.library(mod, spec, work / "kernels.so")
                blocks = profile(work, lib)
                insns, symbols = disassemble(mca.replace("llvm-mca", "llvm-objdump"), lib)
            costs = block_costs(blocks, insns, mca, spec.target_json["mcpu"])
            layer_cycles = sum(b["count"] * b["cycles_per_iter"] for b in costs
                               if "conv2d" in owner(symbols, b["start"]) or "matmul" in owner(symbols, b["start"]))
            out[layer][label] = {"cycles": layer_cycles, "macs": c * o * k * k * (hw * hw if kind == "conv" else 1)}
            print(f"  {layer} {label}: {layer_cycles:,.0f} cycles", file=sys.stderr, flush=True)
        for label, row in out[layer].items():
            row["speedup_vs_int8"] = out[layer]["a8w8"]["cycles"] / row["cycles"]
    return out


def resnet8(work: Path, threads: int, rounds: int, log) -> dict:
    """The QAT low-bit ResNet-8s (QONNX exports) against the INT8 ResNet-8 (the bundled FP32 model,
    PTQ on its calibration slice), batch 1, each engine in its own process: medians and speed-ups."""
    import compiler
    from compiler import zoo

    data = zoo.bundled_slice()
    engines = {}
    art = compiler.compile(zoo.model_path("fmnist-resnet8"), target="x86",
                           quantize=compiler.QuantConfig(calibration={"input": zoo.normalize(data["calib"])}))
    art.save(work / "resnet8-int8.tar")
    engines["int8 (PTQ)"] = Engine(str(work / "resnet8-int8.tar"))
    for cfg in ("w1a1", "w2a2", "w2a8", "w4a4"):
        model = Path(zoo.model_path("fmnist-resnet8")).with_name(f"fmnist_resnet8_{cfg}.qonnx.onnx")
        compiler.compile(model, target="x86").save(work / f"resnet8-{cfg}.tar")
        engines[cfg] = Engine(str(work / f"resnet8-{cfg}.tar"))
    log(f"resnet8: timing {len(engines)} engines, {rounds} rounds")
    x = zoo.normalize(data["test_x"][:1]).astype(np.float32)
    samples = interleaved(engines, {"input": x}, threads, rounds, RUNS_PER_ROUND)
    base = samples["int8 (PTQ)"]
    return {name: {"us": 1e3 * statistics.median(s), "speedup_vs_int8": statistics.median(b / t for b, t in zip(base, s))}
            for name, s in samples.items()}


def kernel_us(path: str, x: np.ndarray, runs: int, pick=lambda schedule: schedule.startswith(("int8", "bitserial"))
              ) -> tuple[float, str]:
    """Median microseconds over ``runs`` profiled runs of the artifact's first kernel whose schedule
    ``pick`` accepts (default: the integer layer kernel, int8 or bit-serial), and that schedule."""
    import compiler

    module, samples, schedule = compiler.load(path), [], ""
    for _ in range(runs):
        row = next(r for r in module.profile({"input": x}) if pick(str(r["schedule"])))
        samples.append(row["us"])
        schedule = str(row["schedule"])
    return statistics.median(samples), schedule


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--bits", default=",".join(BITS))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profiles", type=int, default=9, help="profiled runs per kernel time (median)")
    parser.add_argument("--out", default=None, help="JSON (default bench/results/lowbit[_BOARD].json)")
    parser.add_argument("--arm", metavar="BOARD", help="estimate for this ARM board instead of timing here")
    parser.add_argument("--mca", default="llvm-mca-19")
    parser.add_argument("--no-resnet8", dest="resnet8", action="store_false",
                        help="skip the QAT ResNet-8s against the INT8 one")
    args = parser.parse_args()
    bits = [b for b in args.bits.split(",") if b]
    out = Path(args.out or ROOT / "bench" / "results" / f"lowbit{'_' + args.arm if args.arm else ''}.json")
    if args.arm:
        table = arm_estimate(args.arm, args.layers.split(","), bits, args.mca)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"board": args.arm, "size": ARM_SIZE, "layers": table}, indent=1))
        print(f"{args.arm} (llvm-mca {args.mca}, estimates), layers at {ARM_SIZE}x{ARM_SIZE}: speed-up over int8")
        print("| layer | a8w8 cycles | " + " | ".join(bits) + " |")
        print("|---" * (2 + len(bits)) + "|")
        for layer, rows in table.items():
            print(f"| {layer} | {rows['a8w8']['cycles']:,.0f} | "
                  + " | ".join(f"{rows[b]['speedup_vs_int8']:.2f}×" for b in bits) + " |")
        return
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results = {"cpu": _cpu(), "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "load_before": Path("/proc/loadavg").read_text().split()[:3], "layers": {}}
    with tempfile.TemporaryDirectory(prefix="squeeze-lowbit-") as tmp:
        results["peak_gops"] = {p: peak(p, args.threads, Path(tmp)) for p in ("vnni_peak", "popcnt_peak")}
        for layer in filter(None, args.layers.split(",")):
            log(f"{layer}: compiling {1 + len(bits)} artifacts")
            engines = prepare(layer, bits, Path(tmp), log)
            kind, c, o, k, hw = LAYERS[layer]
            shape = (1, c, hw, hw) if kind == "conv" else (1, c)
            x = np.random.default_rng(1).uniform(0, 1.5, shape).astype(np.float32)
            log(f"{layer}: timing {len(engines)} engines, {args.rounds} rounds")
            samples = interleaved({n: Engine(p) for n, (p, _) in engines.items()}, {"input": x}, args.threads,
                                  args.rounds, RUNS_PER_ROUND)
            base = samples["a8w8"]
            results["layers"][layer] = {
                name: {"kernel": engines[name][1], "ms": statistics.median(s),
                       "speedup_vs_int8": statistics.median(b / t for b, t in zip(base, s))}
                for name, s in samples.items()}
            for name, (path, _) in engines.items():
                if path.endswith(".tar"):
                    results["layers"][layer][name]["kernel_us"] = kernel_us(path, x, args.profiles)[0]
        if args.resnet8:
            results["resnet8"] = resnet8(Path(tmp), args.threads, args.rounds, log)
    results["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"{results['cpu']}, {args.threads} threads, {results['date']}, load {' '.join(results['load_before'])}")
    print("| layer | " + " | ".join(["a8w8 int8 ms", "ORT INT8 ms", *[f"{b} ms (× int8)" for b in bits]]) + " |")
    print("|---" * (3 + len(bits)) + "|")
    for layer, rows in results["layers"].items():
        cells = [f"{rows['a8w8']['ms']:.3f}", f"{rows['ort_int8']['ms']:.3f}"]
        cells += [f"{rows[b]['ms']:.3f} ({rows[b]['speedup_vs_int8']:.2f}×)" for b in bits]
        print(f"| {layer} | " + " | ".join(cells) + " |")
    print("\nThe layer's kernel alone, µs (× the int8 kernel):\n")
    print("| layer | a8w8 | " + " | ".join(bits) + " |")
    print("|---" * (2 + len(bits)) + "|")
    for layer, rows in results["layers"].items():
        base = rows["a8w8"]["kernel_us"]
        print(f"| {layer} | {base:.0f} | "
              + " | ".join(f"{rows[b]['kernel_us']:.0f} ({base / rows[b]['kernel_us']:.2f}×)" for b in bits) + " |")
    if "resnet8" in results:
        print("\nFashion-MNIST ResNet-8, batch 1: " + ", ".join(
            f"{name} {r['us']:.1f} µs ({r['speedup_vs_int8']:.2f}×)" for name, r in results["resnet8"].items()))
    peaks = results["peak_gops"]
    if all(peaks.values()):
        print(f"\nInstruction limits, {args.threads} thread(s): vpdpbusd {peaks['vnni_peak']:.0f} GOP/s, bit-serial "
              f"step {peaks['popcnt_peak']:.0f} binary GOP/s ({peaks['popcnt_peak'] / peaks['vnni_peak']:.2f}×)")


if __name__ == "__main__":
    main()
