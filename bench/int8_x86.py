"""INT8 on x86: Squeeze (VNNI kernels, tuned) against ONNX Runtime, FP32 and INT8.

Usage: ``python bench/int8_x86.py [--models resnet18,mobilenetv2,efficientnet-lite0]
[--batches 1,8] [--threads 1,2] [--int8-trials 400] [--fp32-db DIR] [--rounds 15] [--out FILE]``

For each model and batch size:

* Squeeze INT8: PTQ (min-max, per-channel int8 weights, uint8 activations) calibrated on
  real photos, tuned with MetaSchedule (``--int8-trials``; records kept in
  ``$SQUEEZE_CACHE/bench/tuning`` and reused by later runs);
* Squeeze FP32: the float model with the MetaSchedule database ``--fp32-db DIR/<model>``
  at batch 1 when there is one (``bench/fp32.py --db DIR`` tunes them), else the default
  schedules;
* ONNX Runtime FP32, and ONNX Runtime INT8: ``quant_pre_process`` then ``quantize_static``
  (QDQ, per-channel s8 weights, u8 activations, same photos).

Then, for each thread count (``TVM_NUM_THREADS`` and ORT's intra-op threads equal), the
four run interleaved, each in its own worker process (:mod:`compiler.timing`): each round times every
runner (median of a few runs), and the report gives medians over rounds, the paired
per-round ratios of Squeeze INT8 to the others, GOP/s (2 ops per MAC) and the percentage of
the int8 peak that ``bench/vnni_peak.c`` measures on this machine (``vpdpbusd`` zmm, same
thread count).
The machine load (``/proc/loadavg``) is recorded before and after.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compiler.timing import Engine, interleaved  # noqa: E402

MODELS = ("resnet18", "mobilenetv2", "efficientnet-lite0")
RUNNERS = ("squeeze_int8", "squeeze_fp32", "ort_fp32", "ort_int8")
RUNS_PER_ROUND = 5


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """The model with a static batch of ``batch`` (inputs, outputs and Reshape constants)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    shapes = {n.input[1] for n in graph.node if n.op_type == "Reshape"}
    for init in graph.initializer:
        if init.name in shapes:
            dims = onnx.numpy_helper.to_array(init).copy()
            if dims.size and dims[0] == 1:
                dims[0] = batch
                init.CopyFrom(onnx.numpy_helper.from_array(dims, init.name))
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def model_macs(path: Path, batch: int) -> int:
    """Multiply-accumulates of the conv/matmul layers (``compiler.report``)."""
    from compiler.frontend import import_onnx
    from compiler.pipeline import Recipe, run_passes
    from compiler.report import layer_table

    program = run_passes(import_onnx(path, {"input": (batch, 3, 224, 224)}), Recipe.cleanups())
    return sum(int(r.get("macs") or 0) for r in layer_table(program.mod))


def calibration(batch: int) -> np.ndarray:
    """Real-photo calibration images, a whole number of batches."""
    from compiler.zoo.photos import calibration_photos

    images = calibration_photos()
    return images[: max(batch, len(images) // batch * batch)]


def ort_int8(src: Path, dst: Path, calib: np.ndarray, batch: int) -> None:
    """ONNX Runtime's recommended static INT8: pre-processing, then QDQ u8/s8 per-channel."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": calib[i:i + batch]} for i in range(0, len(calib), batch)])

        def get_next(self):
            return next(self.items, None)

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # shapes are static
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def prepare(name: str, batch: int, work: Path, int8_trials: int, fp32_db: Path | None, log) -> dict:
    """Build the four runners' files for one model and batch; returns their paths and MACs."""
    import compiler
    from compiler import zoo

    tag = f"{name}-b{batch}"
    src = work / f"{tag}.onnx"
    onnx.save(with_batch(onnx.load(zoo.model_path(name)), batch), src)
    calib = calibration(batch)
    tuning = zoo.cache_dir() / "bench" / "tuning"
    files = {"ort_fp32": src, "ort_int8": work / f"{tag}.int8.onnx"}
    ort_int8(src, files["ort_int8"], calib, batch)
    shape = {"input": (batch, 3, 224, 224)}
    int8_db = tuning / f"{tag}-squeeze_int8"
    fresh = not (int8_db / "database_tuning_record.json").exists()
    # bench/fp32.py tunes at batch 1: other batch sizes are other workloads
    fp32 = fp32_db / name if fp32_db is not None and (fp32_db / name).is_dir() and batch == 1 else None
    for runner, quant, trials, db in (
            ("squeeze_int8", compiler.QuantConfig(calibration={"input": calib}), int8_trials if fresh else 0, int8_db),
            ("squeeze_fp32", None, 0, fp32)):
        start = time.time()
        art = compiler.compile(src, "x86", input_shapes=shape, quantize=quant, tune_trials=trials,
                               tuning_db=db if trials or (db is not None and db.exists()) else None)
        files[runner] = art.save(work / f"{tag}.{runner}.tar")
        used = (f" ({trials} trials)" if trials else "") + (f", database {db}" if db and db.exists() else "")
        log(f"  {tag} {runner}: compiled in {time.time() - start:.0f} s{used}")
    return {"files": {k: str(v) for k, v in files.items()}, "macs": model_macs(src, batch)}


def peak(program: str, threads: int, work: Path) -> float | None:
    """GOP/s of ``bench/PROGRAM.c`` (``vnni_peak``, ``popcnt_peak``) on ``threads`` threads (None
    without a C compiler)."""
    exe = work / program
    if not exe.exists():
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None or subprocess.run([cc, "-O2", "-fopenmp", "-march=native", str(ROOT / "bench" / f"{program}.c"),
                                         "-o", str(exe)]).returncode:
            return None
    out = subprocess.run([str(exe), str(threads)], capture_output=True, text=True)
    return float(out.stdout) if out.returncode == 0 else None


def report(cases: dict, timings: dict, peaks: dict, loads: list[str]) -> str:
    """Markdown tables: medians, paired ratios, GOP/s and % of the int8 peak."""
    lines = ["| model | batch | threads | Squeeze INT8 ms | Squeeze FP32 ms | ORT FP32 ms | ORT INT8 ms | "
             "ORT INT8 / Squeeze INT8 | Squeeze FP32 / INT8 | ORT FP32 / Squeeze INT8 | Squeeze INT8 GOP/s "
             "(% of peak) | ORT INT8 GOP/s |",
             "|" + "---|" * 13]
    for threads, per_case in sorted(timings.items()):
        for tag, samples in per_case.items():
            case = cases[tag]
            med = {k: statistics.median(v) for k, v in samples.items()}
            ratio = {k: statistics.median(a / b for a, b in zip(samples[k], samples["squeeze_int8"]))
                     for k in ("ort_int8", "squeeze_fp32", "ort_fp32")}
            gops = {k: 2 * case["macs"] / (med[k] * 1e-3) / 1e9 for k in ("squeeze_int8", "ort_int8")}
            peak = peaks.get(threads)
            share = f" ({100 * gops['squeeze_int8'] / peak:.0f}%)" if peak else ""
            lines.append(f"| {case['model']} | {case['batch']} | {threads} | {med['squeeze_int8']:.2f} | "
                         f"{med['squeeze_fp32']:.2f} | {med['ort_fp32']:.2f} | {med['ort_int8']:.2f} | "
                         f"{ratio['ort_int8']:.2f}x | {ratio['squeeze_fp32']:.2f}x | {ratio['ort_fp32']:.2f}x | "
                         f"{gops['squeeze_int8']:.0f}{share} | {gops['ort_int8']:.0f} |")
    peak_text = ", ".join(f"{t} thread{'s' * (t > 1)}: {p:.0f} GOP/s" for t, p in sorted(peaks.items()) if p)
    return "\n".join([f"int8 peak (vpdpbusd zmm, bench/vnni_peak.c): {peak_text or 'not measured'}",
                      f"load average before / after: {loads[0]} / {loads[-1]}", "", *lines])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batches", default="1,8")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--int8-trials", type=int, default=400)
    p.add_argument("--fp32-db", type=Path, help="directory of per-model FP32 tuning databases (bench/fp32.py --db)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--out", help="also write the report (markdown) to this file")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="squeeze-int8-bench-"))
    cases = {}
    for name in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            print(f"preparing {name} batch {batch}", flush=True)
            case = prepare(name, batch, work, args.int8_trials, args.fp32_db, print)
            cases[f"{name}-b{batch}"] = {**case, "model": name, "batch": batch}
    loads = [Path("/proc/loadavg").read_text().split()[0]]
    timings, peaks = {}, {}
    for threads in map(int, args.threads.split(",")):
        peaks[threads] = peak("vnni_peak", threads, work)
        timings[threads] = {}
        for tag, case in cases.items():
            print(f"timing {tag} on {threads} thread(s)", flush=True)
            x = np.random.default_rng(0).standard_normal((case["batch"], 3, 224, 224)).astype(np.float32)
            engines = {k: Engine(case["files"][k]) for k in RUNNERS}
            timings[threads][tag] = interleaved(engines, {"input": x}, threads, args.rounds, RUNS_PER_ROUND)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "int8_x86.json").write_text(json.dumps(
        {"cases": cases, "timings_ms": timings, "peaks_gops": peaks, "load": loads,
         "date": time.strftime("%Y-%m-%d")}, indent=1) + "\n")
    loads.append(Path("/proc/loadavg").read_text().split()[0])
    text = report(cases, timings, peaks, loads)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
