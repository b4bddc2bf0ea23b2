"""The deployment verbs of ``squeeze``: ``bench``, ``eval``, ``--version`` and ``run --top-k``.

``bench`` times an artifact (and optionally ONNX Runtime on the ONNX model) through
:mod:`compiler.timing`: every engine in its own worker process, interleaved round by round.
``eval`` measures top-1/top-k accuracy on a labelled ``.npz`` and, given the FP32 ONNX model,
the agreement of the artifact's predictions with ONNX Runtime's.

Imports stay lazy: ``squeeze --help`` must not pay for TVM or ONNX Runtime.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .cli_args import log
from .errors import SqueezeError

LABELS = "labels"


# --------------------------------------------------------------------------------------- registration
def add_commands(parser: argparse.ArgumentParser, sub) -> None:
    """Register ``squeeze --version``, ``squeeze bench`` and ``squeeze eval``."""
    parser.add_argument("--version", action=_VersionAction, help="print the Squeeze, TVM and ONNX Runtime versions")

    b = sub.add_parser("bench", help="latency and throughput of an artifact, optionally against ONNX Runtime")
    b.add_argument("artifact", help="compiled artifact (.tar)")
    b.add_argument("--vs", metavar="MODEL", help="baseline: an ONNX model (run by ONNX Runtime) or another artifact")
    b.add_argument("--threads", type=int, help="threads of every engine (default: $TVM_NUM_THREADS or all cores)")
    b.add_argument("--batch", type=int, help="batch size to time; the artifact must be compiled for it")
    b.add_argument("--rounds", type=int, default=10, help="rounds; each times every engine in turn (default 10)")
    b.add_argument("--runs", type=int, default=20, help="timed calls per engine and round (default 20)")
    b.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    b.set_defaults(func=cmd_bench)

    e = sub.add_parser("eval", help="top-1/top-k accuracy of an artifact on labelled data")
    e.add_argument("artifact", help="compiled artifact (.tar)")
    e.add_argument("--data", required=True, help=".npz with one array per input name (leading sample axis) "
                                                 "and 'labels' (int class ids)")
    e.add_argument("--top-k", type=int, default=5, help="k of the top-k accuracy (default 5)")
    e.add_argument("--reference", metavar="MODEL.onnx",
                   help="FP32 ONNX model run by ONNX Runtime: agreement of the predictions with it")
    e.add_argument("--output", help="output holding the class scores (default: the first)")
    e.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    e.set_defaults(func=cmd_eval)


class _VersionAction(argparse.Action):
    """``--version``: computed only when asked (TVM's version costs its import when not installed as a package)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def _dist_version(dist: str, module: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        pass
    try:
        return getattr(__import__(module), "__version__", "unknown")
    except ImportError:
        return "not installed"


def version_text() -> str:
    from . import __version__

    return "\n".join([f"squeeze {__version__}", f"TVM {_dist_version('apache-tvm', 'tvm')}",
                      f"ONNX Runtime {_dist_version('onnxruntime', 'onnxruntime')}",
                      f"ONNX {_dist_version('onnx', 'onnx')}"])


# --------------------------------------------------------------------------------------- shared helpers
def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as JSON atomically."""
    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def check_json(path: str | None) -> None:
    if path:
        from .atomic import check_writable

        if Path(path).suffix != ".json":
            raise SqueezeError(f"--json {path}: give a .json file name")
        check_writable(path)


def _read_artifact(path: str, verb: str):
    from .artifact import Artifact

    if Path(path).suffix == ".onnx":
        raise SqueezeError(f"{verb} runs a compiled artifact, {path} is an ONNX model: compile it first with "
                           f"`squeeze compile {path} -o model.tar`")
    return Artifact.read(path)


def builds(manifest) -> dict[int, tuple[list, list]]:
    """``{batch: (input specs, output specs)}`` of every batch size the artifact holds, the default
    first; the batch is the first input's leading dimension, as compile takes it (a recurrent
    state input such as ``[2, 1, 128]`` may lead with another)."""
    from .program import batch_of

    return {batch_of(inputs): (list(inputs), list(outputs)) for _, inputs, outputs in manifest.builds()}


def _positive(value: int | None, flag: str, example: str) -> None:
    if value is not None and value < 1:
        raise SqueezeError(f"{flag} {value}: give a positive number, e.g. {flag} {example}")


def _onnx_inputs(path: str):
    """``{name: [dims, None for dynamic]}`` of an ONNX model's real inputs, and the model."""
    import onnx

    if Path(path).is_dir() or not Path(path).is_file():
        raise SqueezeError(f"ONNX model not found: {path}: check the path")
    try:
        model = onnx.load(path)
    except Exception as err:  # noqa: BLE001  (protobuf raises several kinds)
        raise SqueezeError(f"{path} is not a readable ONNX model ({str(err).splitlines()[0][:120]}): "
                           "give the .onnx file") from None
    init = {i.name for i in model.graph.initializer}
    dims = {}
    for i in model.graph.input:
        if i.name in init:
            continue
        dims[i.name] = [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
    return dims, model


def _check_onnx_inputs(path: str, dims: dict, specs: list, flag: str) -> bool:
    """Check that the ONNX model takes the inputs ``specs``; True when only its static batch differs."""
    expected = {s.name: list(s.shape) for s in specs}
    if set(dims) != set(expected):
        raise SqueezeError(f"{flag} {path} takes inputs {sorted(dims)}, the artifact {sorted(expected)}: "
                           "give the ONNX model the artifact was compiled from")
    rebatch = False
    for name, shape in expected.items():
        got = dims[name]
        if len(got) != len(shape) or any(g is not None and g != s for g, s in zip(got[1:], shape[1:])):
            raise SqueezeError(f"{flag} {path}: input '{name}' has shape {['?' if g is None else g for g in got]}, "
                               f"the artifact takes {shape}: give the ONNX model the artifact was compiled from")
        rebatch |= got[0] is not None and got[0] != shape[0]
    return rebatch


def _rebatched(model, batch: int, folder: str) -> str:
    """A copy of ``model`` whose inputs and outputs take ``batch`` in their leading dimension."""
    import onnx

    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_value = batch
    del model.graph.value_info[:]
    path = os.path.join(folder, "rebatched.onnx")
    onnx.save(model, path)
    return path


# --------------------------------------------------------------------------------------- bench
def cmd_bench(args) -> None:
    from .runtime import check_host, random_inputs
    from .timing import Engine, interleaved

    for value, flag, example in ((args.threads, "--threads", "2"), (args.batch, "--batch", "8"),
                                 (args.rounds, "--rounds", "10"), (args.runs, "--runs", "20")):
        _positive(value, flag, example)
    check_json(args.json)
    if Path(args.artifact).suffix != ".tar":
        raise SqueezeError(f"bench times a compiled artifact (.tar), not {args.artifact}: compile it first with "
                           f"`squeeze compile MODEL.onnx -o model.tar`, and give the ONNX model with --vs")
    manifest = _read_artifact(args.artifact, "bench").manifest
    check_host(manifest)
    held = builds(manifest)
    batch = next(iter(held)) if args.batch is None else args.batch
    if batch not in held:
        shapes = ",".join(f"{s.name}:{'x'.join(map(str, (batch, *s.shape[1:])))}" for s in manifest.inputs)
        which = f"batch {next(iter(held))}" if len(held) == 1 else f"batches {', '.join(map(str, held))}"
        raise SqueezeError(f"{args.artifact} is compiled for {which}, not {batch}: recompile with "
                           f"--input-shape {shapes}")
    specs = held[batch][0]
    threads = args.threads or int(os.environ.get("TVM_NUM_THREADS") or os.cpu_count() or 1)
    name = f"squeeze {Path(args.artifact).name}"
    engines = {name: Engine(str(args.artifact))}
    baseline = None
    with tempfile.TemporaryDirectory(prefix="squeeze-bench-") as tmp:
        if args.vs:
            baseline = _baseline(args.vs, specs, batch, tmp, engines)
        inputs = random_inputs(SimpleNamespace(inputs=specs))
        per_call: dict[str, list[float]] = {n: [] for n in engines}
        seen: dict[int, list[str]] = {}

        def on_turn(r: int, engine: str, times: list[float]) -> None:
            per_call[engine].extend(times)
            seen.setdefault(r, []).append(engine)
            if len(seen[r]) == len(engines):
                figures = ", ".join(f"{n} {float(np.median(per_call[n][-len(times):])):.3f} ms" for n in engines)
                log(f"round {r + 1}/{args.rounds}: {figures}")

        log(f"bench: {len(engines)} engine(s), each in its own process, {args.rounds} rounds x {args.runs} runs, "
            f"batch {batch}, {threads} thread(s)")
        try:
            rounds = interleaved(engines, inputs, threads, args.rounds, args.runs, on_turn=on_turn)
        except RuntimeError as err:
            raise SqueezeError(f"{err}: run the model alone (squeeze run, or ONNX Runtime) to see why") from None
    results = {n: _latency(per_call[n], rounds[n], batch) for n in engines}
    if baseline is not None:
        for stats in results.values():
            stats["vs_baseline"] = results[baseline]["median_ms"] / stats["median_ms"]
    print(f"bench {args.artifact}: batch {batch}, {threads} thread(s), {args.rounds} rounds x {args.runs} runs "
          f"per engine (own process each, interleaved)")
    print(_bench_table(results, baseline))
    if baseline is not None:
        print(f"vs: median latency of {baseline} / that of the engine (above 1: faster than the baseline)")
    if args.json:
        write_json(args.json, {"artifact": str(args.artifact), "baseline": baseline, "batch": batch,
                               "threads": threads, "rounds": args.rounds, "runs": args.runs, "engines": results})
        log(f"wrote {args.json}")


def _baseline(path: str, specs: list, batch: int, tmp: str, engines: dict) -> str:
    """Add the ``--vs`` engine to ``engines`` (an ONNX model re-batched if needed); returns its name."""
    from .timing import Engine

    if Path(path).suffix == ".tar":
        other = builds(_read_artifact(path, "bench --vs").manifest)
        if [(s.name, tuple(s.shape)) for s in other.get(batch, ([], []))[0]] != [(s.name, tuple(s.shape)) for s in specs]:
            raise SqueezeError(f"--vs {path} does not take the inputs {[(s.name, list(s.shape)) for s in specs]}: "
                               "compare artifacts compiled for the same input shapes")
        kind = "squeeze"
    else:
        dims, model = _onnx_inputs(path)
        if _check_onnx_inputs(path, dims, specs, "--vs"):
            path = _rebatched(model, batch, tmp)
        kind = "onnxruntime"
    name = f"{kind} {Path(path).name}"
    if name in engines:
        name += " (vs)"
    engines[name] = Engine(str(path))
    return name


def _latency(times: list[float], round_medians: list[float], batch: int) -> dict:
    """trtexec-style figures over every timed call."""
    t = np.asarray(times, dtype=np.float64)
    median = float(np.median(t))
    return {"median_ms": median, "p90_ms": float(np.percentile(t, 90)), "p99_ms": float(np.percentile(t, 99)),
            "min_ms": float(t.min()), "mean_ms": float(t.mean()), "throughput": batch * 1e3 / median,
            "round_medians_ms": list(round_medians), "samples_ms": list(times)}


def _bench_table(results: dict, baseline: str | None) -> str:
    from .report import format_table

    vs = "vs_ort" if baseline and baseline.startswith("onnxruntime") else "vs_baseline"
    rows = []
    for name, s in results.items():
        row = {"engine": name, **{k: f"{s[k]:.3f}" for k in ("median_ms", "p90_ms", "p99_ms", "min_ms", "mean_ms")},
               "samples/s": f"{s['throughput']:,.1f}"}
        if baseline is not None:
            row[vs] = f"{s['vs_baseline']:.2f}x"
        rows.append(row)
    columns = ["engine", "median_ms", "p90_ms", "p99_ms", "min_ms", "mean_ms", "samples/s"]
    return format_table(rows, columns + ([vs] if baseline is not None else []), totals=False)


# --------------------------------------------------------------------------------------- eval
def cmd_eval(args) -> None:
    from .runtime import Module

    _positive(args.top_k, "--top-k", "5")
    check_json(args.json)
    artifact = _read_artifact(args.artifact, "eval")
    held = builds(artifact.manifest)
    batch = max(held)  # the largest batch the artifact holds: fewest calls
    specs, out_specs = held[batch]
    out_spec = _score_output(out_specs, args.output, batch)
    classes = math.prod(out_spec.shape[1:])
    if args.top_k > classes:
        raise SqueezeError(f"--top-k {args.top_k} is more than the {classes} classes of output '{out_spec.name}': "
                           f"give --top-k {min(5, classes)} or less")
    inputs, labels = load_labelled(args.data, specs, classes)
    reference = None
    if args.reference:
        dims, _ = _onnx_inputs(args.reference)
        _check_onnx_inputs(args.reference, dims, specs, "--reference")
    module = Module(artifact)
    start = time.perf_counter()
    scores = predict(lambda feed: module.run(feed)[out_spec.name], inputs, batch, len(labels), classes)
    log(f"eval: {len(labels)} samples in {math.ceil(len(labels) / batch)} batches of {batch}, "
        f"{time.perf_counter() - start:.1f} s")
    if args.reference:
        reference = _reference_scores(args.reference, dims, inputs, out_spec.name, len(labels), classes)
    k = args.top_k
    result = accuracy(scores, labels, k, reference)
    n = len(labels)
    print(f"eval {args.artifact} on {args.data}: {n} samples, batch {batch}, output '{out_spec.name}' "
          f"({classes} classes)")
    print(f"top-1 accuracy  {_pct(result['top1'], n)}")
    print(f"top-{k} accuracy  {_pct(result['topk'], n)}")
    if reference is not None:
        print(f"reference {args.reference} (FP32, ONNX Runtime): top-1 {_pct(result['reference_top1'], n).strip()}, "
              f"top-{k} {_pct(result['reference_topk'], n).strip()}")
        print(f"top-1 agreement with the reference  {_pct(result['agreement_top1'], n)}")
        print(f"reference top-1 within the top-{k}  {_pct(result['agreement_topk'], n)}")
    if args.json:
        write_json(args.json, {"artifact": str(args.artifact), "data": str(args.data), "samples": n, "batch": batch,
                               "output": out_spec.name, "classes": classes, "top_k": k,
                               "reference": args.reference,
                               **{key: {"correct": v, "fraction": v / n} for key, v in result.items()}})
        log(f"wrote {args.json}")


def _pct(count: int, n: int) -> str:
    return f"{100 * count / n:6.2f} %  ({count}/{n})"


def _score_output(specs: list, name: str | None, batch: int):
    """The output holding per-sample class scores: ``batch`` x classes (trailing 1s allowed)."""
    outputs = {s.name: s for s in specs}
    if name is not None and name not in outputs:
        raise SqueezeError(f"--output {name}: the artifact's outputs are {sorted(outputs)}")
    spec = outputs[name] if name is not None else specs[0]
    shape = list(spec.shape)
    if len(shape) < 2 or shape[0] != batch or sum(d != 1 for d in shape[2:]):
        raise SqueezeError(f"output '{spec.name}' has shape {shape}, eval needs class scores of shape "
                           f"[{batch}, classes]: give a classifier's artifact (or --output NAME)")
    return spec


def load_labelled(path: str, specs: list, classes: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A labelled ``.npz`` checked against the input ``specs``: one array per input with a leading
    sample axis, and ``labels`` (integer class ids in [0, classes))."""
    from .cli_args import read_npz

    arrays = read_npz(path, "data file", "numpy.savez(path, input=x, labels=y)")
    names = [s.name for s in specs]
    hint = f"save one array per input ({', '.join(names)}) plus '{LABELS}'"
    if LABELS not in arrays:
        raise SqueezeError(f"{path} has no '{LABELS}' array (found: {', '.join(sorted(arrays)) or 'none'}): {hint}")
    labels = arrays.pop(LABELS)
    missing, extra = [n for n in names if n not in arrays], sorted(set(arrays) - set(names))
    if missing:
        raise SqueezeError(f"{path} has no array for input {', '.join(map(repr, missing))} "
                           f"(found: {', '.join(sorted(arrays)) or 'only labels'}): {hint}")
    if extra:
        raise SqueezeError(f"{path} has arrays the model does not take ({', '.join(extra)}): {hint}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise SqueezeError(f"'{LABELS}' in {path} has shape {list(labels.shape)} {labels.dtype}: it must hold one "
                           "integer class id per sample (N,)")
    if len(labels) == 0:
        raise SqueezeError(f"{path} holds no samples: give at least one")
    if labels.min() < 0 or labels.max() >= classes:
        raise SqueezeError(f"'{LABELS}' in {path} holds class ids in [{labels.min()}, {labels.max()}], the model "
                           f"has {classes} classes: give ids in [0, {classes - 1}]")
    inputs = {}
    for spec in specs:
        arr = arrays[spec.name]
        sample = list(spec.shape[1:])
        if arr.ndim != len(spec.shape) or list(arr.shape[1:]) != sample:
            raise SqueezeError(f"input '{spec.name}' in {path} has shape {list(arr.shape)}, the model takes samples "
                               f"of shape {sample}: save it as N x {'x'.join(map(str, sample))}")
        if len(arr) != len(labels):
            raise SqueezeError(f"input '{spec.name}' in {path} has {len(arr)} samples and '{LABELS}' {len(labels)}: "
                               "give one label per sample")
        dtype = np.dtype(spec.dtype)
        same_kind = (arr.dtype.kind == "f") == (dtype.kind == "f") and np.can_cast(arr.dtype, dtype, "same_kind")
        if arr.dtype != dtype and not same_kind:
            raise SqueezeError(f"input '{spec.name}' in {path} is {arr.dtype}, the model takes {dtype}: convert "
                               "(and normalize) it as for training")
        inputs[spec.name] = arr.astype(dtype, copy=False)
    return inputs, labels.astype(np.int64)


def predict(run, inputs: dict[str, np.ndarray], batch: int, n: int, classes: int) -> np.ndarray:
    """Scores (n x classes) of ``run({name: batch array}) -> array`` over batches of ``batch``; the
    last batch is padded with copies of the last sample and the padding dropped."""
    scores = np.empty((n, classes), np.float32)
    last = time.perf_counter()
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        feed = {}
        for name, arr in inputs.items():
            chunk = arr[start:stop]
            if len(chunk) < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
            feed[name] = np.ascontiguousarray(chunk)
        scores[start:stop] = np.asarray(run(feed)).reshape(batch, classes)[: stop - start]
        if time.perf_counter() - last > 5:
            last = time.perf_counter()
            log(f"eval: {stop}/{n} samples")
    return scores


def _reference_scores(path: str, dims: dict, inputs: dict, output: str, n: int, classes: int) -> np.ndarray:
    """Class scores of the ONNX model run by ONNX Runtime (its own batch if static, else 64)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    target = output if output in names else names[0]
    batch = next(iter(dims.values()))[0] or 64
    return predict(lambda feed: session.run([target], feed)[0], inputs, batch, n, classes)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores per row, highest first (ties: lower index first)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def accuracy(scores: np.ndarray, labels: np.ndarray, k: int, reference: np.ndarray | None = None) -> dict[str, int]:
    """Counts of correct top-1 / top-k predictions, and with ``reference`` scores the counts of
    top-1 agreement and of the reference's top-1 within the top-k."""
    top = top_k(scores, k)
    out = {"top1": int((top[:, 0] == labels).sum()), "topk": int((top == labels[:, None]).any(axis=1).sum())}
    if reference is not None:
        ref = top_k(reference, k)
        out.update(reference_top1=int((ref[:, 0] == labels).sum()),
                   reference_topk=int((ref == labels[:, None]).any(axis=1).sum()),
                   agreement_top1=int((top[:, 0] == ref[:, 0]).sum()),
                   agreement_topk=int((top == ref[:, :1]).any(axis=1).sum()))
    return out


# --------------------------------------------------------------------------------------- run --top-k
def check_top_k(k: int | None) -> None:
    _positive(k, "--top-k", "5")


def print_top_k(outputs: dict[str, np.ndarray], k: int, file=None) -> None:
    """The ``k`` highest scores of every sample of every output (leading axis = samples for 2-D
    and larger outputs; a 1-D output is one sample)."""
    file = file or sys.stdout
    for name, arr in outputs.items():
        rows = arr.reshape(1, -1) if arr.ndim < 2 else arr.reshape(arr.shape[0], -1)
        kk = min(k, rows.shape[1])
        print(f"{name}: shape {list(arr.shape)} {arr.dtype}, top {kk} of {rows.shape[1]} per sample", file=file)
        top = top_k(rows, kk)
        for i, (idx, row) in enumerate(zip(top, rows)):
            classes = ", ".join(f"{int(c)} ({float(row[c]):.4g})" for c in idx)
            print(f"  sample {i}: {classes}", file=file)
