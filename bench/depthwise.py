"""Int8 depthwise layers on x86: the row-quad ``vpdpbusd`` kernel, the float32 FMA kernel, ONNX Runtime.

Usage: ``python bench/depthwise.py [--layers dw3-144-56,...] [--rounds 9] [--threads 2]
[--out bench/results/depthwise.json]``

Each layer is a QDQ model of a 1×1 conv then the depthwise layer (uint8 activations,
per-channel int8 weights, biases, ReLU6: what MobileNetV2 and EfficientNet-Lite0 quantize to; the
1×1 conv puts the depthwise layer inside the network, on NHWC, as in a model), compiled
by Squeeze for this host twice: as it is (stride 1 runs :mod:`targets.integer.depthwise_dot`)
and with the ISA's lane-wise intrinsic withheld (the float32 kernel). ONNX Runtime runs the
same QDQ model (its INT8) and the float model. Every engine runs in its own worker process,
interleaved (:mod:`compiler.timing`); the first table gives medians over rounds (whole calls:
quantize in, both layers, dequantize out). The second gives the fused layer kernel alone
(``Module.profile``, median of ``--profiles`` runs), with GOP/s (2 ops per MAC).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
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
sys.path.insert(0, str(ROOT / "bench"))

from compiler.timing import Engine, interleaved  # noqa: E402
from lowbit import _cpu, kernel_us  # noqa: E402

LAYERS = {  # name -> (kernel, channels, spatial size, stride): MobileNetV2's and EfficientNet-Lite0's
    "dw3-32-112": (3, 32, 112, 1),
    "dw3-144-56": (3, 144, 56, 1),
    "dw3-192-28": (3, 192, 28, 1),
    "dw3-384-14": (3, 384, 14, 1),
    "dw3-960-7": (3, 960, 7, 1),
    "dw5-240-14": (5, 240, 14, 1),
    "dw3-144-56-s2": (3, 144, 56, 2),
}
RUNS_PER_ROUND = 50


def layer_model(k: int, c: int, hw: int, stride: int, quantized: bool) -> onnx.ModelProto:
    """``x → 1×1 conv → clip(0, 6) → depthwise conv → clip(0, 6)`` on ``[1, c, hw, hw]``, each
    tensor through Q/DQ (uint8) and the weights per-channel int8 when ``quantized``. The 1×1
    conv puts the depthwise layer inside the network, where Squeeze runs it on NHWC."""
    rng = np.random.default_rng(c + hw)
    inits = [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
    if quantized:
        inits += [numpy_helper.from_array(np.uint8(0), "zero"), numpy_helper.from_array(np.float32(6 / 255), "a_scale"),
                  numpy_helper.from_array(np.zeros(c, np.int8), "w_zero")]
    nodes = []

    def activation(name: str) -> str:
        if not quantized:
            return name
        nodes.extend([helper.make_node("QuantizeLinear", [name, "a_scale", "zero"], [name + "_q"]),
                      helper.make_node("DequantizeLinear", [name + "_q", "a_scale", "zero"], [name + "_dq"])])
        return name + "_dq"

    def conv(x: str, name: str, shape: tuple[int, ...], **attrs) -> str:
        w = rng.normal(0, 0.3, shape).astype(np.float32)
        scale = (np.abs(w).reshape(shape[0], -1).max(axis=1) / 127).astype(np.float32)
        codes = np.clip(np.round(w / scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, shape[0]).astype(np.float32), name + "_b"))
        if quantized:
            inits.extend([numpy_helper.from_array(codes, name + "_codes"), numpy_helper.from_array(scale, name + "_s")])
            nodes.append(helper.make_node("DequantizeLinear", [name + "_codes", name + "_s", "w_zero"], [name + "_w"],
                                          axis=0))
        else:
            inits.append(numpy_helper.from_array(codes.astype(np.float32) * scale.reshape(-1, 1, 1, 1), name + "_w"))
        nodes.extend([helper.make_node("Conv", [x, name + "_w", name + "_b"], [name], **attrs),
                      helper.make_node("Clip", [name, "lo", "hi"], [name + "_relu6"])])
        return activation(name + "_relu6")

    pad = k // 2
    hidden = conv(activation("input"), "expand", (c, c, 1, 1))
    out = conv(hidden, "dw", (c, 1, k, k), group=c, kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4)
    nodes.append(helper.make_node("Identity", [out], ["output"]))
    out_hw = (hw + 2 * pad - k) // stride + 1
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, hw, hw])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, c, out_hw, out_hw])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def float_kernel_spec():
    """This host's target with the lane-wise intrinsic withheld: depthwise layers on the float32 kernel."""
    from targets import get_target, integer
    from targets.x86 import ISAS, NATIVE

    spec = get_target("x86")
    isa = integer.select_isa(spec.features, ISAS)
    plain = dataclasses.replace(isa, lanewise="")
    return dataclasses.replace(spec, legalize=integer.legalize(plain, spec.integer_ops, NATIVE.get(isa, ()),
                                                               bitserial=spec.bitserial))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profiles", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "depthwise.json")
    args = parser.parse_args()
    import compiler

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results = {"cpu": _cpu(), "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "load_before": Path("/proc/loadavg").read_text().split()[:3], "layers": {}}
    specs = {"squeeze (row quads)": "x86", "squeeze (float kernel)": float_kernel_spec()}
    with tempfile.TemporaryDirectory(prefix="squeeze-dw-") as tmp:
        for layer in filter(None, args.layers.split(",")):
            k, c, hw, stride = LAYERS[layer]
            work = Path(tmp)
            onnx.save(layer_model(k, c, hw, stride, True), work / f"{layer}-qdq.onnx")
            onnx.save(layer_model(k, c, hw, stride, False), work / f"{layer}-fp32.onnx")
            x = np.random.default_rng(1).uniform(0, 1.5, (1, c, hw, hw)).astype(np.float32)
            engines = {}
            for label, spec in specs.items():
                path = work / f"{layer}-{label.split()[1][1:]}.tar"
                compiler.compile(work / f"{layer}-qdq.onnx", target=spec).save(path)
                engines[label] = str(path)
            engines["onnxruntime INT8 (QDQ)"] = str(work / f"{layer}-qdq.onnx")
            engines["onnxruntime FP32"] = str(work / f"{layer}-fp32.onnx")
            log(f"{layer}: timing {len(engines)} engines, {args.rounds} rounds")
            samples = interleaved({n: Engine(p) for n, p in engines.items()}, {"input": x}, args.threads, args.rounds,
                                  RUNS_PER_ROUND)
            base = samples["squeeze (float kernel)"]
            rows = {name: {"ms": statistics.median(s), "speedup_vs_float_kernel": statistics.median(
                b / t for b, t in zip(base, s))} for name, s in samples.items()}
            for label in specs:
                rows[label]["kernel_us"], rows[label]["kernel"] = kernel_us(engines[label], x, args.profiles,
                                                                            lambda s: "depthwise" in s)
            macs = c * k * k * ((hw + 2 * (k // 2) - k) // stride + 1) ** 2  # the depthwise layer's
            results["layers"][layer] = {"macs": macs, "engines": rows}
    results["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    names = list(next(iter(results["layers"].values()))["engines"])
    print(f"{results['cpu']}, {args.threads} threads, {results['date']}, load {' '.join(results['load_before'])}"
          f" -> {' '.join(results['load_after'])}")
    print("| layer | " + " | ".join(f"{n} ms" for n in names) + " |")
    print("|---" * (1 + len(names)) + "|")
    for layer, entry in results["layers"].items():
        rows = entry["engines"]
        print(f"| {layer} | " + " | ".join(f"{rows[n]['ms']:.3f} ({rows[n]['speedup_vs_float_kernel']:.2f}×)"
                                           for n in names) + " |")
    print("\nThe depthwise kernel alone, µs (GOP/s):\n")
    print("| layer | " + " | ".join(specs) + " | row quads / float |")
    print("|---" * (2 + len(specs)) + "|")
    for layer, entry in results["layers"].items():
        rows = entry["engines"]
        cells = [f"{rows[n]['kernel_us']:.1f} ({2 * entry['macs'] / rows[n]['kernel_us'] / 1e3:.0f}), {rows[n]['kernel']}"
                 for n in specs]
        ratio = rows["squeeze (float kernel)"]["kernel_us"] / rows["squeeze (row quads)"]["kernel_us"]
        print(f"| {layer} | " + " | ".join(cells) + f" | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
