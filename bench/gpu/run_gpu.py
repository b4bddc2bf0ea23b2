"""Every GPU check of the CUDA target, on a machine with a GPU and no TVM compiler (see README.md).

Reads the bundle ``build_bundle.py`` wrote (runtime-only TVM on ``sys.path``) and, within a time
budget, writes one JSON (``--out``):

1. the kernel table, bit-exact against the bundle's numpy int64 references;
2. GEMM 4096³ and ResNet-50-shaped implicit-GEMM convs against ``torch._int_mm`` (cuBLASLt int8):
   outputs equal, median times and the ratio;
3. each model's INT8 artifact at each batch: top-1 agreement with ONNX Runtime FP32 and median
   latency, against the torchvision model of the same name in FP16 channels-last (cuDNN) replayed
   from a CUDA graph.
Times are medians of CUDA-event-timed repeats, taken on an otherwise idle GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np


def _load_tvm(bundle: Path):
    sys.path.insert(0, str(bundle / "pylib"))
    import tvm

    return tvm


def _time_ms(fn, sync, repeat: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def kernels(tvm, torch, bundle: Path, table: list[dict], deadline: float) -> list[dict]:
    dev = tvm.cuda(0)
    rows = []
    for case in table:
        if time.monotonic() > deadline:
            rows.append({"name": case["name"], "skipped": "time budget"})
            continue
        path = bundle / "kernels" / case["name"]
        arrays = np.load(path.with_suffix(".npz")) if case["exact"] else _operands(case)
        lib = tvm.runtime.load_module(str(path.with_suffix(".so")))
        data, packed = (tvm.runtime.tensor(arrays[k], dev) for k in ("data", "packed"))
        out = tvm.runtime.empty(tuple(case["out_shape"]), "int32", dev)
        lib["main"](data, packed, out)
        dev.sync()
        got = out.numpy()
        row = {"name": case["name"], "kind": case["kind"]}
        if case["exact"]:
            want = arrays["expected"]
            row.update(bit_exact=bool(np.array_equal(got, want)), mismatches=int((got != want).sum()))
        else:
            ms = _time_ms(lambda: lib["main"](data, packed, out), dev.sync)
            row.update(squeeze_ms=ms, tops=2 * case["macs"] / ms / 1e9, **_vs_int_mm(torch, case, arrays, got))
            row["vs_int_mm"] = row["int_mm_ms"] / ms
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _operands(case: dict) -> dict:
    """Random operands of a speed case and its weight in the kernel's packed layout, restated
    here (``W[Np, Kp]``: per output channel the (ky, kx, c) taps; the output check against
    ``torch._int_mm`` catches any disagreement)."""
    rng = np.random.default_rng(case["seed"])
    data = rng.integers(-128, 128, case["data_shape"], dtype=np.int8)
    weight = rng.integers(-128, 128, case["weight_shape"], dtype=np.int8)
    rows = weight.T if case["kind"] == "matmul" else weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
    packed = np.zeros(case["packed_shape"], np.int8)
    packed[:rows.shape[0], :rows.shape[1]] = rows
    return {"data": data, "weight": weight, "packed": packed}


def _vs_int_mm(torch, case: dict, arrays, got: np.ndarray) -> dict:
    """cuBLASLt int8 GEMM of the same shape (the conv's im2col), its time and whether it agrees."""
    m, n, k = case["gemm"]
    data, weight = (torch.from_numpy(np.ascontiguousarray(arrays[a])).cuda() for a in ("data", "weight"))
    if case["kind"] == "matmul":
        a, b = data, weight
    else:  # NHWC im2col in (ky, kx, c) order, the kernel's reduction order
        oc, _, kh, kw = weight.shape
        oh, ow = got.shape[1:3]
        sh = (data.shape[1] - kh) // (oh - 1) if oh > 1 else 1
        cols = [data[:, y:y + sh * (oh - 1) + 1:sh, x:x + sh * (ow - 1) + 1:sh, :] for y in range(kh) for x in range(kw)]
        a = torch.cat(cols, dim=-1).reshape(m, k).contiguous()
        b = weight.permute(0, 2, 3, 1).reshape(oc, k).t().contiguous()
    ref = torch._int_mm(a, b)
    ms = _time_ms(lambda: torch._int_mm(a, b), torch.cuda.synchronize)
    agree = bool(np.array_equal(ref.cpu().numpy().reshape(got.shape), got))
    return {"int_mm_ms": ms, "int_mm_tops": 2 * m * n * k / ms / 1e9, "equal_to_int_mm": agree}


def models(tvm, torch, bundle: Path, records: list[dict], deadline: float) -> list[dict]:
    import onnxruntime as ort

    dev, rows = tvm.cuda(0), []
    for rec in records:
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(bundle / "models" / rec["artifact"]) as tar:
                tar.extractall(tmp)
            manifest = json.loads((Path(tmp) / "manifest.json").read_text())
            session = ort.InferenceSession(str(bundle / "models" / rec["onnx"]), providers=["CPUExecutionProvider"])
            for name, batch in _libraries(manifest):
                if time.monotonic() > deadline:
                    rows.append({"model": rec["name"], "batch": batch, "skipped": "time budget"})
                    continue
                vm = tvm.runtime.vm.VirtualMachine(tvm.runtime.load_module(str(Path(tmp) / name)), dev)
                shape = [batch, *rec["input_shape"][1:]]
                x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
                arg = tvm.runtime.tensor(x, dev)
                y = vm["main"](arg)
                y = (y[0] if isinstance(y, (list, tuple)) else y).numpy()
                ref = session.run(None, {session.get_inputs()[0].name: x})[0]
                ms = _time_ms(lambda: vm["main"](arg), dev.sync)
                row = {"model": rec["name"], "batch": batch, "squeeze_int8_ms": ms,
                       "top1_agreement_vs_ort_fp32": float((y.argmax(-1) == ref.argmax(-1)).mean())}
                row.update(_torch_fp16(torch, rec["name"], shape))
                if "torch_fp16_ms" in row:
                    row["speedup_vs_torch_fp16"] = row["torch_fp16_ms"] / ms
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def _libraries(manifest: dict) -> list[tuple[str, int]]:
    """``(library, batch)`` of each build of an artifact (compiler/artifact.py's manifest format)."""
    builds = manifest.get("batches") or [{"library": "lib.so", "inputs": manifest["inputs"]}]
    return [(b["library"], int(b["inputs"][0]["shape"][0])) for b in builds]


def _torch_fp16(torch, name: str, shape: list[int]) -> dict:
    """The torchvision model ``name`` in FP16 channels-last, replayed from a CUDA graph."""
    import torchvision

    factory = getattr(torchvision.models, name, None)
    if factory is None:
        return {}
    model = factory(weights=None).cuda().half().to(memory_format=torch.channels_last).eval()
    x = torch.randn(shape, device="cuda").half().to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = True
    with torch.no_grad():
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
    return {"torch_fp16_ms": _time_ms(graph.replay, torch.cuda.synchronize)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(Path(__file__).with_name("bundle")))
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting new checks after this")
    args = parser.parse_args(argv)
    bundle, deadline = Path(args.bundle), time.monotonic() + args.budget_s
    tvm = _load_tvm(bundle)
    import torch

    info = json.loads((bundle / "bundle.json").read_text())
    dev = tvm.cuda(0)
    result = {"target": info["target"], "arch": info["arch"], "device": dev.device_name,
              "device_arch": "sm_" + dev.compute_version.replace(".", ""), "torch": torch.__version__}
    print(json.dumps(result), flush=True)
    result["kernels"] = kernels(tvm, torch, bundle, info["kernels"], deadline)
    result["models"] = models(tvm, torch, bundle, info["models"], deadline)
    Path(args.out).write_text(json.dumps(result, indent=1))
    exact = [r.get("bit_exact") for r in result["kernels"] if "bit_exact" in r]
    print(f"kernels bit-exact: {sum(exact)}/{len(exact)}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
