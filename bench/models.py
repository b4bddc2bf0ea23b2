"""Squeeze on real public ONNX models (the corpus of ``bench/corpus.py``): import, FP32 parity,
INT8 task agreement against ONNX Runtime's INT8, the layers left float, and latency.

Usage: ``python bench/models.py [--models a,b] [--rounds 10] [--threads 2] [--no-time]
[--timeout 1800] [--out FILE]`` (run ``bench/corpus.py`` first, or ``make corpus``).

Per model, in a child process of its own (a compiler crash or hang costs that model only):

* import: ``compiler.frontend.import_onnx`` with the corpus's static input shapes;
* FP32: ``compiler.compile`` for ``x86``, run on the corpus's evaluation inputs; parity is the
  largest ``max |Squeeze - ORT| / max |ORT|`` over outputs and samples (integer outputs: the
  share of differing elements);
* INT8: ``compiler.compile(..., quantize=QuantConfig("int8", calibration=...))`` calibrated on
  the corpus's calibration inputs, and ONNX Runtime's ``quant_pre_process`` + ``quantize_static``
  (QDQ, u8 activations, s8 per-channel weights; per-tensor where ORT refuses per-channel) on
  the same inputs; each scored against ORT FP32 with the entry's task metric (argmax agreement,
  IoU of the above-threshold detections or mask, greedy CTC string matches, cosine, speech
  decisions) on the evaluation inputs;
* OpenVINO + NNCF INT8 (``nncf.quantize`` defaults, same calibration inputs) when a Python
  with both exists: this one, or ``$SQUEEZE_CACHE/openvino-venv`` (made apart so that .venv
  stays as pinned: ``python -m venv .cache/openvino-venv && .cache/openvino-venv/bin/pip
  install openvino==2026.4.1 nncf==3.4.0``, ~45 s, 0.5 GB); else the column says so;
* the conv/matmul layers the INT8 artifact keeps float and why (``squeeze inspect``'s report);
* unless ``--no-time``: Squeeze FP32/INT8 and ORT FP32/INT8 latency, each engine in its own
  process, interleaved (:mod:`compiler.timing`), batch 1, ``--threads`` threads.

Every failure is recorded as one line and the next stage or model goes on. Prints one table and
the failure lines, writes everything as JSON (``--out``, default ``bench/results/models.json``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import corpus  # noqa: E402

RUNS_PER_ROUND = 5
SYMPY = importlib.util.find_spec("sympy") is not None  # ORT's symbolic shape inference needs it
ENGINES = ("squeeze_fp32", "squeeze_int8", "ort_fp32", "ort_int8")


def one_line(err: BaseException) -> str:
    """The first informative line of an exception (TVM's messages carry tracebacks)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "at ", "^"))]
    text = (useful or lines or [""])[0]
    return f"{type(err).__name__}: {text}"[:240]


# ----------------------------------------------------------------------------- task metrics

def _scores(entry: corpus.Entry, outputs: list[np.ndarray]) -> np.ndarray:
    """The flattened score tensor of one sample's outputs, as the entry's detector reads it."""
    read = {
        "identity": lambda o: o,
        "yolov8": lambda o: o[:, 4:],  # [batch, 4 box + classes, anchors]
        "yolox": lambda o: o[..., 4] * o[..., 5],  # objectness × class
        "last1": lambda o: o[..., 1],  # softmax face probability
    }[entry.score]
    return np.concatenate([read(outputs[i]).ravel() for i in entry.outputs])


def _above(entry: corpus.Entry, scores: np.ndarray) -> np.ndarray:
    if entry.relative:
        lo, hi = float(scores.min()), float(scores.max())
        return scores >= lo + entry.threshold * (hi - lo)
    return scores > entry.threshold


def _ctc(entry: corpus.Entry, logits: np.ndarray) -> tuple[int, ...]:
    """Greedy CTC decoding: best class per step (unless the model outputs indices), repeats
    merged, blanks dropped."""
    steps = logits[:, 0] if entry.time_major else logits[0]
    best = steps if steps.dtype.kind in "iu" else steps.argmax(-1)
    return tuple(int(c) for i, c in enumerate(best) if c != entry.blank and (i == 0 or c != best[i - 1]))


def _edits(a: tuple, b: tuple) -> int:
    """Levenshtein distance (a dozen lines; python-Levenshtein is not in .venv)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def agreement(entry: corpus.Entry, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> dict:
    """The task metric of ``candidate`` against ``reference`` outputs (one list per sample):
    ``{"value": float or None, "text": short cell}``."""
    first = entry.outputs[0]
    n = len(reference)
    if entry.task == "classify":
        same = sum(int(np.argmax(r[first]) == np.argmax(c[first])) for r, c in zip(reference, candidate))
        return {"value": same / n, "text": f"top-1 {same}/{n}"}
    if entry.task in ("detect", "mask"):
        inter = union = 0
        for r, c in zip(reference, candidate):
            a, b = _above(entry, _scores(entry, r)), _above(entry, _scores(entry, c))
            inter, union = inter + int((a & b).sum()), union + int((a | b).sum())
        if union == 0:
            return {"value": None, "text": "no detections"}
        return {"value": inter / union, "text": f"IoU {inter / union:.3f}"}
    if entry.task == "ctc":
        pairs = [(_ctc(entry, r[first]), _ctc(entry, c[first])) for r, c in zip(reference, candidate)]
        same = sum(int(a == b) for a, b in pairs)
        cer = sum(_edits(a, b) for a, b in pairs) / max(1, sum(len(a) for a, _ in pairs))
        return {"value": same / n, "cer": cer, "text": f"strings {same}/{n}, CER {100 * cer:.1f}%"}
    if entry.task == "embed":
        cos = [float(np.dot(r[first].ravel(), c[first].ravel())
                     / (np.linalg.norm(r[first]) * np.linalg.norm(c[first]) + 1e-12))
               for r, c in zip(reference, candidate)]
        return {"value": min(cos), "text": f"cos min {min(cos):.4f}"}
    if entry.task == "audio":
        p = np.array([float(r[first].ravel()[0]) for r in reference])
        q = np.array([float(c[first].ravel()[0]) for c in candidate])
        same = int(((p > entry.threshold) == (q > entry.threshold)).sum())
        return {"value": same / n, "text": f"speech {same}/{n}, |dp| {np.abs(p - q).max():.3f}"}
    raise ValueError(f"unknown task {entry.task}")


def parity(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> float:
    """Largest ``max |c - r| / max |r|`` over outputs and samples (integer outputs: share of
    differing elements)."""
    worst = 0.0
    for ref, cand in zip(reference, candidate):
        for r, c in zip(ref, cand):
            if r.shape != c.shape:
                return float("inf")
            if r.dtype.kind in "iub":
                worst = max(worst, float(np.mean(r != c)))
            else:
                worst = max(worst, float(np.abs(c.astype(np.float64) - r).max() / max(float(np.abs(r).max()), 1e-12)))
    return worst


# ----------------------------------------------------------------------------- the engines

def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_outputs(path: Path, feeds: corpus.Feeds, threads: int) -> list[list[np.ndarray]]:
    session = ort_session(path, threads)
    return [session.run(None, feed) for feed in feeds]


def squeeze_outputs(artifact: Path, feeds: corpus.Feeds, names: list[str]) -> list[list[np.ndarray]]:
    """Outputs of a Squeeze artifact in ONNX Runtime's output order (by name, else by position)."""
    import compiler

    module = compiler.load(artifact)
    results = []
    for feed in feeds:
        out = module.run(feed)
        results.append([out[n] for n in names] if all(n in out for n in names) else list(out.values()))
    return results


def ort_int8(src: Path, dst: Path, calibration: corpus.Feeds) -> str:
    """ONNX Runtime's static INT8: ``quant_pre_process`` then QDQ, u8 activations, s8 per-channel
    weights. Models below opset 13 are converted to 13 first (``onnx.version_converter``), since
    ORT's per-channel DequantizeLinear needs it; where that fails, per-tensor weights. Returns a
    note on what had to give."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            return next(self.items, None)

    notes, per_channel = [], True
    if corpus.model_info(src)["opset"] < 13:
        try:
            upgraded = dst.with_suffix(".opset13.onnx")
            onnx.save(onnx.version_converter.convert_version(onnx.load(str(src)), 13), str(upgraded))
            src = upgraded
            notes.append("opset 13")
        except Exception as err:  # noqa: BLE001
            per_channel = False
            notes.append(f"per-tensor: {one_line(err)[:60]}")
    pre = dst.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=not SYMPY)
    except Exception as err:  # noqa: BLE001  (shape inference gives up on some exporters)
        pre = src
        notes.append(f"no pre-processing: {one_line(err)[:60]}")

    def quantize(channels: bool) -> None:
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=channels,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        ort_session(dst, 1)  # an invalid per-channel DequantizeLinear only fails here

    try:
        quantize(per_channel)
    except Exception as err:  # noqa: BLE001
        if not per_channel:
            raise
        quantize(False)
        notes.append(f"per-tensor: {one_line(err)[:60]}")
    return ", ".join(notes)


def openvino_python() -> Path | None:
    """A Python with ``openvino`` and ``nncf``: this one, else ``$SQUEEZE_CACHE/openvino-venv``'s."""
    if all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf")):
        return Path(sys.executable)
    venv = corpus.corpus_dir().parent / "openvino-venv" / "bin" / "python"
    return venv if venv.exists() else None


def openvino_int8(model: Path, calib: Path, evaluation: Path, work: Path, threads: int) -> list[list[np.ndarray]]:
    """OpenVINO outputs of the model quantized by NNCF's default post-training quantization, run
    by :func:`openvino_worker` in the OpenVINO Python."""
    out = work / f"{model.stem}.openvino.npz"
    run = subprocess.run([str(openvino_python()), __file__, "--openvino-worker", str(model), str(calib),
                          str(evaluation), str(out), str(threads)], capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(([ln for ln in run.stderr.splitlines() if ln.strip()] or [f"exit {run.returncode}"])[-1])
    with np.load(out) as data:
        count = Counter(k.split("_")[0] for k in data.files)  # outputs per sample
        return [[data[f"s{i}_o{j}"] for j in range(count[f"s{i}"])] for i in range(len(count))]


def openvino_worker(model: str, calib: str, evaluation: str, out: str, threads: str) -> None:
    """NNCF-quantize ``model`` on the calibration feeds (static shapes), run the evaluation
    feeds with OpenVINO on the CPU, save output ``j`` of sample ``i`` as ``s{i}_o{j}``."""
    import nncf
    import openvino as ov

    calibration, feeds = corpus.load_feeds(Path(calib)), corpus.load_feeds(Path(evaluation))
    core = ov.Core()
    net = core.read_model(model)
    net.reshape({name: list(array.shape) for name, array in calibration[0].items()})
    quantized = nncf.quantize(net, nncf.Dataset(calibration), subset_size=len(calibration))
    compiled = core.compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": int(threads)})
    results = {f"s{i}_o{j}": np.asarray(v) for i, feed in enumerate(feeds)
               for j, v in enumerate(compiled(feed).values())}
    np.savez(out, **results)


def float_layers(artifact: Path) -> dict:
    """The conv/matmul layers an artifact runs in float, with the quantizer's reasons
    (``squeeze inspect``'s report)."""
    from compiler.inspect_artifact import artifact_report

    rows = [r for r in artifact_report(artifact)["layers"] if "bits" in r]
    floats = [r for r in rows if r["bits"] == "float"]
    return {"float": len(floats), "layers": len(rows),
            "reasons": dict(Counter(r.get("reason") or "no reason given" for r in floats)),
            "names": [r.get("name") for r in floats]}


# ----------------------------------------------------------------------------- one model

def evaluate(entry: corpus.Entry, folder: Path, work: Path, threads: int, configs: dict | None = None,
             fp32: bool = True) -> dict:
    """Every stage of one model; a failing stage is recorded as its one-line message. ``configs``
    (``{label: QuantConfig options}``) adds Squeeze INT8 variants ``squeeze_int8:label``; without
    ``fp32`` the Squeeze FP32 compile is skipped (accuracy runs)."""
    import compiler
    from compiler.frontend import import_onnx

    files = corpus.paths(entry, folder)
    model, feeds, calib = files["model"], corpus.load_feeds(files["eval"]), corpus.load_feeds(files["calib"])
    names = [o.name for o in ort_session(model, threads).get_outputs()]
    reference = ort_outputs(model, feeds, threads)
    result: dict = {"files": {"ort_fp32": str(model)}, "errors": {}, "seconds": {}}

    def stage(name: str, fn):
        start = time.perf_counter()
        try:
            return fn()
        except Exception as err:  # noqa: BLE001  (recorded; the other stages go on)
            result["errors"][name] = one_line(err)
            return None
        finally:
            result["seconds"][name] = round(time.perf_counter() - start, 1)

    shapes = {k: tuple(v) for k, v in entry.shapes.items()}
    result["import"] = stage("import", lambda: import_onnx(model, shapes)) is not None
    variants = [("squeeze_fp32", None)] if fp32 else []
    variants.append(("squeeze_int8", compiler.QuantConfig("int8", calibration=calib)))
    variants += [(f"squeeze_int8:{label}", compiler.QuantConfig("int8", calibration=calib, **options))
                 for label, options in (configs or {}).items()]
    result["variants"] = [tag for tag, _ in variants if ":" in tag]
    for tag, quant in variants:
        path = work / f"{entry.name}.{tag}.tar"
        art = stage(f"{tag}_compile",
                    lambda: compiler.compile(model, "x86", input_shapes=shapes, quantize=quant).save(path))
        if art is None:
            continue
        outs = stage(f"{tag}_run", lambda: squeeze_outputs(path, feeds, names))
        if outs is None:
            continue
        result["files"][tag] = str(path)
        result[tag] = {"parity": parity(reference, outs), "agreement": agreement(entry, reference, outs)}
    if "squeeze_int8" in result["files"]:
        result["float_layers"] = stage("inspect", lambda: float_layers(Path(result["files"]["squeeze_int8"])))
    q8 = work / f"{entry.name}.int8.onnx"
    note = stage("ort_int8_quantize", lambda: ort_int8(model, q8, calib))
    if note is not None:
        outs = stage("ort_int8_run", lambda: ort_outputs(q8, feeds, threads))
        if outs is not None:
            result["files"]["ort_int8"] = str(q8)
            result["ort_int8"] = {"note": note, "agreement": agreement(entry, reference, outs)}
    if openvino_python() is not None:
        outs = stage("openvino_int8", lambda: openvino_int8(model, files["calib"], files["eval"], work, threads))
        if outs is not None:
            result["openvino_int8"] = {"agreement": agreement(entry, reference, outs)}
    return result


def run_worker(name: str, folder: Path, work: Path, threads: int, out: Path, configs: dict | None = None,
               fp32: bool = True) -> None:
    """Child-process entry: evaluate one model and write its JSON record to ``out``."""
    (entry,) = corpus.entries(name)
    out.write_text(json.dumps(evaluate(entry, folder, work, threads, configs, fp32)))


def evaluate_isolated(entry: corpus.Entry, folder: Path, work: Path, threads: int, timeout: float,
                      configs: str | None = None, fp32: bool = True) -> dict:
    """:func:`evaluate` in a child process; a crash or a timeout becomes the record's error."""
    out = work / f"{entry.name}.json"
    env = {**os.environ, "TVM_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", entry.name, "--dir", str(folder), "--work", str(work),
           "--threads", str(threads), "--worker-out", str(out)] + (["--configs", configs] if configs else []) + (
        [] if fp32 else ["--no-fp32"])
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            return {"errors": {"worker": f"timed out after {timeout:.0f} s"}}
        if code == 0 and out.exists():
            return json.loads(out.read_text())
        log.seek(0)
        tail = [ln for ln in log.read().splitlines() if ln.strip()][-1:] or [""]
        why = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        return {"errors": {"worker": f"crashed ({why}): {tail[0][:200]}"}}


# ----------------------------------------------------------------------------- timing and report

def time_engines(files: dict, feed: dict, threads: int, rounds: int) -> dict:
    """Median milliseconds of each engine that exists, interleaved in separate processes."""
    from compiler.timing import Engine, interleaved

    engines = {k: Engine(files[k]) for k in ENGINES if k in files}
    samples = interleaved(engines, feed, threads, rounds, RUNS_PER_ROUND)
    return {k: round(statistics.median(v), 3) for k, v in samples.items()}


def _cell(record: dict, key: str, stages: tuple[str, ...]) -> str:
    if key in record:
        return record[key]["agreement"]["text"]
    return "FAIL" if any(s in record.get("errors", {}) for s in stages) else "–"


def table(records: list[dict], timed: bool) -> str:
    """The summary table (one row per model) and the failure lines under it."""
    from compiler.report import format_table

    rows = []
    for rec in records:
        err = rec.get("errors", {})
        fl = rec.get("float_layers")
        row = {"model": rec["name"], "task": rec["task"],
               "import": "ok" if rec.get("import") else "FAIL",
               "FP32 vs ORT": f"{rec['squeeze_fp32']['parity']:.1e}" if "squeeze_fp32" in rec else (
                   "FAIL" if any(k.startswith("squeeze_fp32") or k == "worker" for k in err) else "–"),
               "Squeeze INT8": _cell(rec, "squeeze_int8", ("squeeze_int8_compile", "squeeze_int8_run", "worker")),
               "ORT INT8": _cell(rec, "ort_int8", ("ort_int8_quantize", "ort_int8_run", "worker")) + (
                   f" ({rec['ort_int8']['note']})" if rec.get("ort_int8", {}).get("note") else ""),
               "OpenVINO INT8": _cell(rec, "openvino_int8", ("openvino_int8", "worker")) if openvino_python()
               else "not installed",
               "float layers": f"{fl['float']}/{fl['layers']}" if fl else "–"}
        row.update({f"Squeeze INT8 {k.partition(':')[2]}": _cell(rec, k, (f"{k}_compile", f"{k}_run", "worker"))
                    for k in rec.get("variants", [])})
        if timed:
            ms = rec.get("ms", {})
            row.update({f"{k} ms": f"{ms[k]:.2f}" if k in ms else "–" for k in ENGINES})
        rows.append(row)
    columns = list(rows[0]) if rows else ["model"]
    lines = [format_table(rows, columns, totals=False), "", "failures (first line of each):"]
    for rec in records:
        for stage, message in rec.get("errors", {}).items():
            lines.append(f"  {rec['name']} [{stage}]: {message}")
        for reason, count in (rec.get("float_layers") or {}).get("reasons", {}).items():
            lines.append(f"  {rec['name']} [float]: {count} layer(s): {reason}")
    if len(lines) == 3:
        lines.append("  none")
    from targets.host import x86_without_vnni

    if x86_without_vnni():
        lines.append("(no VNNI on this host: ONNX Runtime's u8s8 INT8 kernels saturate int16 sums here, so its "
                     "INT8 accuracy is understated; its docs advise reduce_range on such CPUs)")
    if not SYMPY:
        lines.append("(ONNX Runtime's quant_pre_process ran without symbolic shape inference: sympy is not installed)")
    return "\n".join(lines)


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated corpus names (default: all)")
    parser.add_argument("--dir", type=Path, default=corpus.corpus_dir(), help="the corpus folder")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-time", action="store_true", help="skip the latency measurements")
    parser.add_argument("--no-fp32", action="store_true", help="skip Squeeze FP32 (accuracy runs; implies --no-time)")
    parser.add_argument("--configs", help='more Squeeze INT8 variants as JSON {label: QuantConfig options}, e.g. '
                                          '\'{"adaround": {"adaround": true}}\'')
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per model before it is given up")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "models.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--openvino-worker", nargs=5, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = _args()
    if args.openvino_worker:
        openvino_worker(*args.openvino_worker)
        return
    if args.worker:
        run_worker(args.worker, args.dir, args.work, args.threads, args.worker_out,
                   json.loads(args.configs) if args.configs else None, not args.no_fp32)
        return
    chosen = corpus.entries(args.models)
    missing = [e.name for e in chosen if not all(p.exists() for p in corpus.paths(e, args.dir).values())]
    if missing:
        raise SystemExit(f"corpus not prepared for {', '.join(missing)}: run `python bench/corpus.py` (make corpus)")
    records = []
    with tempfile.TemporaryDirectory(prefix="squeeze-models-") as tmp:
        for entry in chosen:
            start = time.perf_counter()
            rec = {"name": entry.name, "task": entry.task, "package": f"{entry.asset.package}=={entry.asset.version}",
                   **evaluate_isolated(entry, args.dir, Path(tmp), args.threads, args.timeout, args.configs,
                                       not args.no_fp32)}
            if not (args.no_time or args.no_fp32) and rec.get("files"):
                feed = corpus.load_feeds(corpus.paths(entry, args.dir)["eval"])[0]
                try:
                    rec["ms"] = time_engines(rec["files"], feed, args.threads, args.rounds)
                except Exception as err:  # noqa: BLE001
                    rec.setdefault("errors", {})["timing"] = one_line(err)
            rec["total_s"] = round(time.perf_counter() - start, 1)
            print(f"{entry.name}: {rec['total_s']} s, {len(rec.get('errors', {}))} failure(s)", flush=True)
            rec.pop("files", None)  # temporary paths
            records.append(rec)
    text = table(records, not (args.no_time or args.no_fp32))
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from compiler.atomic import atomic_path

    with atomic_path(args.out) as tmp_out:
        tmp_out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "threads": args.threads,
                                       "rounds": None if args.no_time else args.rounds,
                                       "openvino": str(openvino_python() or ""), "models": records}, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
