"""VTA estimates from the simulator's cycle model (estimates, not board measurements).

Compiles a model for ``vta-sim`` (shift-only ``int8_pow2``), runs one inference with a driver
that executes every offloaded layer's stream once per board model (Pynq-Z1: 64-bit AXI at
100 MHz; Ultra96: 128-bit at 333 MHz) and prints, per layer: MACs, cycles, GEMM-unit
utilization (useful MACs over ``cycles × 256``), overlap of the load/compute/store stages and
DMA bytes; then the network's estimated VTA time per board. With ``--accuracy N`` it also compares
the shift-only quantization with FP32 and per-channel int8 on N Fashion-MNIST test images (and
EfficientNet-Lite0 with ``--efficientnet``).

Usage: ``python bench/vta.py [--model resnet18] [--accuracy N [--efficientnet]] [--json bench/results/vta.json]``
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compiler  # noqa: E402
from compiler import zoo  # noqa: E402
from targets.vta import driver as vta_driver  # noqa: E402
from targets.vta import runtime, simulator  # noqa: E402
from targets.vta.config import BOARDS  # noqa: E402

PUBLISHED = {"seconds": 0.41906, "source": "apache/tvm vta/examples/resnet18/pynq/README.md (early VTA example "
             "log, 'imagenet_predict.py': t-cost=0.41906, whole ResNet-18 incl. its CPU layers, measured on a Pynq)"}
BOARD_NAMES = ("pynq", "ultra96")


class EveryBoard(vta_driver.Driver):
    """Runs each stream in the simulator; records the cycle model of every board for it."""

    records: list[dict] = []

    def __init__(self, cfg):
        self.cfg = cfg

    def run(self, stream: np.ndarray, dram: np.ndarray) -> np.ndarray:
        out, record = None, {"instructions": stream.size // 16}
        for name in BOARD_NAMES:
            out = dram.copy()
            record[name] = simulator.run(stream, out, self.cfg, name)
        EveryBoard.records.append(record)
        return out


def calibration(model: str) -> dict:
    if model == "fmnist-resnet8":
        return {"input": zoo.bundled_slice()["calib"][:32]}
    from compiler.zoo.photos import calibration_photos

    return {"input": calibration_photos()[:8]}


def profile(model: str) -> tuple[dict, str]:
    path = zoo.model_path(model)
    calib = calibration(model)
    start = time.perf_counter()
    art = compiler.compile(path, target="vta-sim", quantize=compiler.QuantConfig("int8_pow2", calibration=calib))
    compile_s = time.perf_counter() - start
    tmp = Path("/tmp") / f"squeeze-bench-vta-{model}.tar"
    art.save(tmp)
    module = compiler.load(tmp)
    EveryBoard.records.clear()
    runtime.set_driver(lambda cfg, _board: EveryBoard(cfg))
    runtime.RUNS.clear()
    try:
        start = time.perf_counter()
        module.run({module.input_names[0]: calib["input"][:1]})
        run_s = time.perf_counter() - start
    finally:
        runtime.set_driver(None)
    rows, totals = [], {b: simulator.SimStats() for b in BOARD_NAMES}
    macs_total = 0
    for i, (run, rec) in enumerate(zip(runtime.RUNS, EveryBoard.records)):
        n, c, h, w, o, oh, ow = run["shape"]
        macs = run["macs"]
        macs_total += macs
        row = {"layer": i, "shape": f"{c}x{h}x{w}->{o}x{oh}x{ow}", "macs": macs, "instructions": rec["instructions"]}
        for b in BOARD_NAMES:
            s: simulator.SimStats = rec[b]
            totals[b] += s
            row[f"{b}_cycles"] = s.cycles
            row[f"{b}_util"] = round(100 * macs / (s.cycles * 256), 1)
            row[f"{b}_overlap"] = round(s.overlap, 2)
        s = rec["pynq"]
        row["dma_kib"] = round((s.inp_load_nbytes + s.wgt_load_nbytes + s.acc_load_nbytes + s.uop_load_nbytes
                                + s.out_store_nbytes) / 1024, 1)
        row["counters"] = s.as_dict()
        rows.append(row)
    result = {"model": model, "offloaded_layers": len(rows), "offloaded_macs": macs_total, "layers": rows,
              "compile_s": round(compile_s, 1), "simulate_s": round(run_s, 2), "published": PUBLISHED,
              "note": "cycle-model estimates of the VTA part only (the CPU layers are not estimated)"}
    for b in BOARD_NAMES:
        t = totals[b]
        result[b] = {"cycles": t.cycles, "ms": round(1e3 * t.seconds(BOARDS[b]), 2),
                     "util": round(100 * macs_total / max(t.cycles * 256, 1), 1), "overlap": round(t.overlap, 2),
                     "gop_s": round(2 * macs_total / max(t.seconds(BOARDS[b]), 1e-12) / 1e9, 1)}
    return result, text(result)


def text(result: dict) -> str:
    lines = [f"{result['model']} on vta-sim (cycle-model estimates; {result['offloaded_layers']} layers on VTA, "
             f"{result['offloaded_macs'] / 1e9:.2f} GMAC)", "",
             "| layer | shape | MACs (M) | Pynq cycles | Pynq util % | overlap | Ultra96 util % | DMA KiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["layers"]:
        lines.append(f"| {r['layer']} | {r['shape']} | {r['macs'] / 1e6:.1f} | {r['pynq_cycles']:,} | "
                     f"{r['pynq_util']} | {r['pynq_overlap']} | {r['ultra96_util']} | {r['dma_kib']} |")
    lines.append("")
    for b in BOARD_NAMES:
        t = result[b]
        lines.append(f"{BOARDS[b].description}: {t['ms']} ms for the VTA layers, GEMM utilization {t['util']} %, "
                     f"{t['gop_s']} GOP/s, stage overlap {t['overlap']}")
    lines.append(f"published VTA ResNet-18 on Pynq: {PUBLISHED['seconds']} s ({PUBLISHED['source']})")
    return "\n".join(lines)


def accuracy(limit: int, efficientnet: bool) -> tuple[dict, str]:
    """Shift-only ``int8_pow2`` against FP32 and per-channel ``int8``: Fashion-MNIST top-1 on
    ``limit`` test images, EfficientNet-Lite0 agreement with FP32 on photo crops. Run on x86:
    vta-sim computes the same integer model bit for bit (tests/test_vta_models.py)."""
    from quant import agreement, ort_outputs, squeeze_outputs

    images, labels = zoo.fashion_mnist("test")
    images, labels = images[:limit], labels[:limit]
    model = zoo.model_path("fmnist-resnet8")
    calib = zoo.bundled_slice()["calib"]
    top1 = lambda out: round(100 * float(np.mean(out.argmax(axis=1) == labels)), 2)  # noqa: E731
    fm = {"images": len(images), "calibration": len(calib), "fp32": top1(ort_outputs(model, images))}
    for scheme in ("int8_pow2", "int8"):
        fm[scheme] = top1(squeeze_outputs(model, images, calib, scheme=scheme))
    result = {"fmnist": fm}
    lines = [f"Fashion-MNIST ResNet-8 top-1 on {len(images)} test images: FP32 {fm['fp32']} %, shift-only int8_pow2 "
             f"{fm['int8_pow2']} %, per-channel int8 {fm['int8']} %"]
    if efficientnet:
        from compiler.zoo.photos import calibration_photos, photos

        model = zoo.model_path("efficientnet-lite0")
        images, calib = photos(), calibration_photos()
        reference = ort_outputs(model, images)
        eff = {"images": len(images), "calibration": len(calib)}
        for scheme in ("int8_pow2", "int8"):
            eff[scheme] = dict(zip(("top1_agreement", "top5_containment", "sqnr_db"),
                                   map(float, agreement(reference, squeeze_outputs(model, images, calib,
                                                                                   scheme=scheme)))))
        result["efficientnet"] = eff
        lines.append(f"EfficientNet-Lite0 on {len(images)} photo crops, agreement with FP32 (top-1 %, top-5 %, "
                     f"SQNR dB): int8_pow2 {tuple(eff['int8_pow2'].values())}, int8 {tuple(eff['int8'].values())}")
    return result, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=("resnet18", "fmnist-resnet8"))
    parser.add_argument("--accuracy", type=int, default=0, metavar="N", help="also top-1 on N Fashion-MNIST images")
    parser.add_argument("--efficientnet", action="store_true", help="with --accuracy: EfficientNet-Lite0 too")
    parser.add_argument("--json", default="bench/results/vta.json")
    args = parser.parse_args()
    result, report = profile(args.model)
    print(report)
    doc = {"profile": result}
    if args.accuracy:
        acc, acc_text = accuracy(args.accuracy, args.efficientnet)
        print(acc_text)
        doc["accuracy"] = acc
    from compiler.atomic import atomic_path

    with atomic_path(args.json) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2, default=str))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
