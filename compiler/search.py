"""Automatic mixed precision and joint compression search: ``compiler.optimize`` / ``squeeze optimize``.

Starting from the plain INT8 model, a greedy search applies one move at a time to the best
model so far that meets the goal: lower a layer's weights to a narrower kernel the target
declares (``TargetSpec.accelerates``: int4/int2 weights), prune a channel group by a ratio, or,
while the goal is not met, keep a sensitive layer float. Moves are ranked by the time they
should save, from each layer's measured kernel time on the target (``inspect --profile``)
scaled by what earlier moves of the same kind actually saved, and by the layer's quantization
sensitivity (output SQNR with only that layer at the lower precision). Every candidate is
compiled, run on the validation data (the metric), timed against the INT8 baseline in its own
process (:mod:`compiler.timing`, medians) and weighed (artifact size).

Unlike a search that stops at the first model that passes, this one keeps the Pareto front of
(latency, metric, size) and returns the fastest model meeting the goal when the budget is spent
or the moves run out; when none meets it, the one closest to the goal, said plainly. The
plain INT8 model is always compiled first, so something is always returned.

The search directory holds ``search.json`` (rewritten atomically after every candidate) and the
candidates' artifacts; the best model so far is copied atomically to the output after every
improvement. Re-running with the same directory resumes: candidates already evaluated are read
back, not evaluated again (the greedy path replays from them). The budget counts the search's
wall time over all its runs.
"""
from __future__ import annotations

import glob
import hashlib
import importlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import SqueezeError

CHECKPOINT = "search.json"
FORMAT = 1
LABELS = "labels"
PRUNE_RATIOS = (0.25, 0.5, 0.75)
MIN_GAIN = 0.02         # a move is kept when it makes the model at least 2 % faster
MIN_SAVING_US = 0.05    # moves expected to save less than this are not tried
MAX_CHECKED = 8         # candidates timed at most in the final check (one worker process each)
Log = Callable[[str], None]


# --------------------------------------------------------------------------------------- goal
@dataclass(frozen=True)
class Goal:
    """What the returned model must reach.

    ``quantity``: ``drop`` (the metric of FP32 minus the candidate's, at most ``bound``),
    ``agreement`` / ``top1`` (that metric at least ``bound``) or ``metric`` (the chosen metric at
    least ``bound``); fractions (``1%`` = 0.01) except a ``metric`` bound given without ``%``.
    """

    quantity: str
    bound: float
    text: str

    def met(self, value: float, reference: float) -> bool:
        if self.quantity == "drop":
            return reference - value <= self.bound + 1e-12
        return value >= self.bound - 1e-12

    def gap(self, value: float, reference: float) -> float:
        """How far a metric value is from the goal (0 when met)."""
        need = reference - self.bound if self.quantity == "drop" else self.bound
        return max(0.0, need - value)


_GOAL = re.compile(r"^\s*(drop|agreement|top1|metric)\s*(<=|>=|=<|=>|<|>)\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")
_SENSE = {"drop": "<=", "agreement": ">=", "top1": ">=", "metric": ">="}


def parse_goal(text: str) -> Goal:
    """``drop<=1%``, ``agreement>=99%``, ``top1>=90%`` or ``metric>=0.8`` (a user metric's value)."""
    m = _GOAL.match(text or "")
    hint = "e.g. --goal 'drop<=1%', 'agreement>=99%', 'top1>=90%' or 'metric>=0.8'"
    if not m:
        raise SqueezeError(f"goal {text!r} does not parse: write QUANTITY<=|>=BOUND with QUANTITY drop, agreement, "
                           f"top1 or metric, {hint}")
    quantity, sense, number, percent = m.groups()
    sense = {"=<": "<=", "=>": ">=", "<": "<=", ">": ">="}.get(sense, sense)
    if sense != _SENSE[quantity]:
        raise SqueezeError(f"goal {text!r}: {quantity} is bounded with {_SENSE[quantity]}, {hint}")
    if quantity != "metric" and not percent:
        raise SqueezeError(f"goal {text!r}: give the bound in percent, e.g. {quantity}{sense}{number}%")
    bound = float(number) / (100 if percent else 1)
    if percent and bound > 1:
        raise SqueezeError(f"goal {text!r}: a bound above 100% cannot be met, {hint}")
    return Goal(quantity, bound, text.strip())


_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h)?\s*$")


def parse_budget(text: str | float | int) -> float:
    """Seconds of ``90s``, ``15m``, ``1.5h`` or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _BUDGET.match(str(text))
        if not m:
            raise SqueezeError(f"budget {text!r} does not parse: give a time such as 90s, 15m or 1h")
        seconds = float(m.group(1)) * {"h": 3600, "m": 60, "min": 60}.get(m.group(2) or "s", 1)
    if not seconds > 0:
        raise SqueezeError(f"budget {text!r}: give a positive time, e.g. 15m")
    return seconds


# --------------------------------------------------------------------------------------- metric
@dataclass(frozen=True)
class Metric:
    """How good a model's outputs on the validation data are (higher is better)."""

    name: str
    fn: Callable[[dict, dict, dict], float]   # (outputs, reference outputs, validation data) -> value
    needs_labels: bool = False


def _first(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    scores = next(iter(outputs.values()))
    return scores.reshape(scores.shape[0], -1)


def _agreement(outputs, reference, _data) -> float:
    return float(np.mean(np.argmax(_first(outputs), 1) == np.argmax(_first(reference), 1)))


def _top1(outputs, _reference, data) -> float:
    return float(np.mean(np.argmax(_first(outputs), 1) == data[LABELS]))


def metric_of(metric: str | Callable | None, goal: Goal, has_labels: bool) -> Metric:
    """The metric: ``agreement`` (top-1 agreement with FP32), ``top1`` (needs labels), a callable
    ``fn(outputs, data) -> float`` (``outputs``: ``{name: array}`` over the validation samples,
    ``data``: the validation arrays) or its ``module:function`` name. Default: what the goal
    names, else ``top1`` with labels and ``agreement`` without."""
    if metric is None:
        metric = goal.quantity if goal.quantity in ("agreement", "top1") else ("top1" if has_labels else "agreement")
    if goal.quantity in ("agreement", "top1") and metric != goal.quantity:
        raise SqueezeError(f"goal {goal.text!r} bounds {goal.quantity}, the metric is {_name(metric)}: drop --metric "
                           f"or write the goal as drop<=... / metric>=...")
    if callable(metric):
        return Metric(_name(metric), lambda out, _ref, data: float(metric(out, data)))
    if metric == "agreement":
        return Metric("agreement", _agreement)
    if metric == "top1":
        return Metric("top1", _top1, needs_labels=True)
    module, sep, attr = str(metric).partition(":")
    if not sep or not module or not attr:
        raise SqueezeError(f"metric {metric!r}: use agreement, top1 or a Python function as module:function")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise SqueezeError(f"metric {metric!r}: cannot import it ({err}): put the module on PYTHONPATH") from None
    if not callable(fn):
        raise SqueezeError(f"metric {metric!r} is not a function")
    return Metric(str(metric), lambda out, _ref, data: float(fn(out, data)))


def _name(metric) -> str:
    return getattr(metric, "__name__", str(metric)) if callable(metric) else str(metric)


def load_validation(data, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Validation arrays (``.npz`` path or dict): one per input with a leading sample axis, and
    optionally ``labels``."""
    if isinstance(data, (str, os.PathLike)):
        from .cli_args import read_npz

        data = read_npz(str(data), "validation data", "numpy.savez(path, input=x, labels=y)")
    if not isinstance(data, Mapping):
        raise SqueezeError("validation data: give an .npz file or a dict of arrays (one per input, and 'labels')")
    arrays = {k: np.asarray(v) for k, v in data.items()}
    missing = [n for n in input_names if n not in arrays]
    if missing:
        raise SqueezeError(f"validation data has no array for input {', '.join(map(repr, missing))} (found: "
                           f"{', '.join(sorted(arrays)) or 'none'}): save one array per input plus '{LABELS}'")
    counts = {len(arrays[n]) for n in input_names} | ({len(arrays[LABELS])} if LABELS in arrays else set())
    if len(counts) != 1 or 0 in counts:
        raise SqueezeError("validation data: every array (inputs and labels) needs the same, non-zero, sample count")
    if LABELS in arrays:
        arrays[LABELS] = arrays[LABELS].reshape(-1).astype(np.int64)
    return arrays


# --------------------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class Candidate:
    """A point of the search space: per-layer precision (``float`` or a scheme; the rest the base
    scheme) and per-group pruning ratios (a group named by its first output layer)."""

    precision: tuple[tuple[str, str], ...] = ()
    prune: tuple[tuple[str, float], ...] = ()

    @property
    def key(self) -> str:
        return json.dumps({"precision": sorted(self.precision), "prune": sorted(self.prune)})

    def set_precision(self, layer: str, mode: str | None) -> "Candidate":
        rest = tuple(p for p in self.precision if p[0] != layer)
        return replace(self, precision=tuple(sorted(rest + (((layer, mode),) if mode else ()))))

    def set_prune(self, group: str, ratio: float) -> "Candidate":
        rest = tuple(p for p in self.prune if p[0] != group)
        return replace(self, prune=tuple(sorted(rest + ((group, ratio),))))

    def describe(self) -> str:
        parts = [f"{layer}:{_short(mode)}" for layer, mode in self.precision]
        parts += [f"prune {group}:{ratio:g}" for group, ratio in self.prune]
        return ", ".join(parts) or "plain INT8"

    @classmethod
    def from_json(cls, obj: dict) -> "Candidate":
        return cls(tuple((a, b) for a, b in obj["precision"]), tuple((a, float(b)) for a, b in obj["prune"]))

    def to_json(self) -> dict:
        return {"precision": [list(p) for p in self.precision], "prune": [list(p) for p in self.prune]}


def _kept(group: dict, ratio: float, round_to: int) -> int:
    """Channels a group keeps at ``ratio`` (as :func:`passes.prune.ratios.keep_count` rounds them)."""
    step = round_to if group.get("direct", True) and round_to > 1 else 1
    return group["size"] if ratio == 0 else min(group["size"], int(np.floor(group["size"] * (1 - ratio) / step + 0.5))
                                                * step)


def _short(mode: str) -> str:
    m = re.match(r"w(\d+)_.*__a(\d+)_", mode)
    return f"w{m.group(1)}a{m.group(2)}" if m else mode


@dataclass(frozen=True)
class Move:
    """One change to a candidate: ``kind`` precision / prune / float, on ``what`` (layer or group)."""

    kind: str
    what: str
    value: Any

    def apply(self, c: Candidate, groups: Sequence[str] = ()) -> Candidate:
        if self.kind == "prune":
            return c.set_prune(self.what, self.value)
        if self.kind == "prune_all":  # every group to at least this ratio
            for group in groups:
                c = c.set_prune(group, max(self.value, dict(c.prune).get(group, 0.0)))
            return c
        return c.set_precision(self.what, self.value)


def pareto_front(records: Sequence[dict]) -> list[dict]:
    """The records no other record dominates in (latency, metric, size): lower latency, higher
    metric, smaller size, at least as good in all and better in one. Records without a latency
    or metric (failed) are left out; order: by latency."""
    points = [r for r in records if r.get("latency_ms") is not None and r.get("metric") is not None]

    def dominates(a: dict, b: dict) -> bool:
        ge = (a["latency_ms"] <= b["latency_ms"] and a["metric"] >= b["metric"] and a["size_bytes"] <= b["size_bytes"])
        gt = (a["latency_ms"] < b["latency_ms"] or a["metric"] > b["metric"] or a["size_bytes"] < b["size_bytes"])
        return ge and gt

    return sorted((r for r in points if not any(dominates(o, r) for o in points if o is not r)),
                  key=lambda r: r["latency_ms"])


def speed(record: dict) -> float | None:
    """A record's latency: timed when it was, else modelled."""
    return record["latency_ms"] if record.get("latency_ms") is not None else record.get("estimated_ms")


def choose(records: Sequence[dict], latency: Callable[[dict], float | None] = lambda r: r.get("latency_ms")
           ) -> tuple[dict | None, bool]:
    """The fastest record meeting the goal (and True), else the one closest to it (and False);
    ``latency``: the figure compared (default: timed ones only)."""
    done = [r for r in records if r.get("metric") is not None and latency(r) is not None]
    meeting = [r for r in done if r["meets"]]
    if meeting:
        return min(meeting, key=lambda r: (latency(r), r["size_bytes"])), True
    if done:
        return min(done, key=lambda r: (r["gap"], latency(r))), False
    return None, False


def latency_front(records: Sequence[dict]) -> list[dict]:
    """Records no other is both as fast (:func:`speed`) and as good as: the ones worth timing."""
    done = [r for r in records if r.get("metric") is not None and speed(r) is not None]
    return [r for r in done if not any(o is not r and speed(o) <= speed(r) and o["metric"] >= r["metric"]
                                       and (speed(o) < speed(r) or o["metric"] > r["metric"]) for o in done)]


# --------------------------------------------------------------------------------------- the search
@dataclass
class SearchResult:
    """What :func:`optimize` returns: the chosen artifact and how the search went."""

    output: Path
    record: dict | None
    met: bool
    note: str
    front: list[dict]
    search_dir: Path
    evaluated: int = 0
    records: list[dict] = field(default_factory=list)


class _Search:
    """State of one search (see the module docstring); ``run`` does it."""

    def __init__(self, model, spec, calibration, validation, goal: Goal, metric: Metric, budget_s: float,
                 output: Path, search_dir: Path, input_shapes, log: Log, rounds: int, runs: int, round_to: int,
                 threads: int, max_candidates: int | None, sensitivity_samples: int):
        self.model, self.spec, self.calibration, self.data = model, spec, calibration, validation
        self.goal, self.metric, self.budget_s, self.output, self.dir = goal, metric, budget_s, output, search_dir
        self.shapes, self.log, self.rounds, self.runs, self.round_to = input_shapes, log, rounds, runs, round_to
        self.threads, self.max_candidates, self.sensitivity_samples = threads, max_candidates, sensitivity_samples
        self.started = time.monotonic()
        self.state: dict = {}
        self.new_evaluations = 0
        self._learned: dict[str, list[float]] = {}  # rebuilt on every run, so that a resumed search replays its path

    # ---- checkpoint ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.state.get("elapsed_before_s", 0.0) + time.monotonic() - self.started

    def save(self) -> None:
        from .verbs import write_json

        self.state["elapsed_s"] = round(self.elapsed(), 2)
        write_json(self.dir / CHECKPOINT, self.state)

    def open(self, identity: dict) -> None:
        """Start ``search.json`` or resume it; a directory of another model or target is refused."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "candidates").mkdir(exist_ok=True)
        path = self.dir / CHECKPOINT
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise SqueezeError(f"{path} is not a readable search checkpoint ({err}): give a new --search-dir")
            for what in ("model_sha256", "target", "validation_sha256", "goal", "metric"):
                if old.get("identity", {}).get(what) != identity[what]:
                    mine, theirs = identity, old.get("identity", {})
                    if what == "model_sha256":
                        raise SqueezeError(
                            f"search directory {self.dir} belongs to model {theirs.get('model_name')} "
                            f"(sha256 {str(theirs.get('model_sha256'))[:12]}), not to {mine['model_name']} "
                            f"(sha256 {mine['model_sha256'][:12]}): give another --search-dir")
                    raise SqueezeError(f"search directory {self.dir} was made with {what} {theirs.get(what)!r}, "
                                       f"this search has {mine[what]!r}: give another --search-dir")
            self.state = old
            self.state["elapsed_before_s"] = old.get("elapsed_s", 0.0)
            self.log(f"optimize: resuming {path}: {len(old.get('records', []))} candidates already evaluated, "
                     f"{old.get('elapsed_s', 0):.0f} s of the budget used")
        else:
            self.state = {"format": FORMAT, "identity": identity, "records": [], "elapsed_before_s": 0.0}

    def cached(self, c: Candidate) -> dict | None:
        return next((r for r in self.state["records"] if r["key"] == c.key), None)

    # ---- evaluation -----------------------------------------------------------------------------
    def compile_options(self, c: Candidate) -> dict:
        from .config import QuantConfig
        from passes.prune import PruneConfig

        floats = [layer for layer, mode in c.precision if mode == "float"]
        schemes = {layer: mode for layer, mode in c.precision if mode != "float"}
        quant = QuantConfig(self.state["base_scheme"], calibration=self.calibration, skip=floats,
                            layer_schemes=schemes)
        prune = None
        if c.prune:
            prune = PruneConfig("filter", ratio={glob.escape(g): r for g, r in c.prune}, calibration=self.calibration,
                                round_to=self.round_to)
        return dict(quantize=quant, prune=prune)

    def artifact_path(self, c: Candidate) -> Path:
        return self.dir / "candidates" / (hashlib.sha1(c.key.encode()).hexdigest()[:12] + ".tar")

    def build(self, c: Candidate) -> Path:
        from .api import compile as compile_model

        art = compile_model(self.model, self.spec, input_shapes=self.shapes, **self.compile_options(c))
        return art.save(self.artifact_path(c))

    def outputs(self, path: Path) -> dict[str, np.ndarray]:
        from .artifact import Artifact
        from .runtime import Module

        return run_batches(Module(Artifact.read(path)).run, self.data, self.input_names)

    def time_against_baseline(self, path: Path) -> tuple[float, float]:
        """Median latency (ms) of ``path`` and its ratio to the INT8 baseline's, timed interleaved."""
        from .timing import Engine, interleaved

        base = self.dir / self.state["baseline_artifact"]
        engines = {"int8": Engine(str(base))} if path == base else {"int8": Engine(str(base)), "cand": Engine(str(path))}
        feed = {n: np.ascontiguousarray(self.data[n][:1]) for n in self.input_names}
        try:
            samples = interleaved(engines, feed, self.threads, self.rounds, self.runs)
        except RuntimeError as err:  # a worker died: recorded as this candidate's failure
            raise SqueezeError(f"timing failed ({err}): run the artifact alone (squeeze run) to see why") from None
        medians = {k: float(np.median(v)) for k, v in samples.items()}
        mine = medians.get("cand", medians["int8"])
        return mine, mine / medians["int8"]

    def layer_times(self, path: Path) -> list[dict]:
        """Per conv/matmul layer of the artifact: name, bits, kept channels, kernel and its time (us)."""
        from .inspect_artifact import artifact_report

        report = artifact_report(path, profile=True, inputs={n: self.data[n][:1] for n in self.input_names})
        rows = []
        for row in report["layers"]:
            if row.get("op") not in ("conv2d", "matmul"):
                continue
            rows.append({k: row.get(k) for k in ("name", "op", "bits", "scheme", "kernel", "schedule", "us", "macs",
                                                  "kept", "sparsity", "stored_bytes")})
        for i, row in enumerate(rows):
            row["layer"] = f"{row['op']}_{i}"
        return rows

    def evaluate(self, c: Candidate, moves: str) -> dict:
        """Compile, run, time and weigh ``c`` (or read it back from the checkpoint)."""
        found = self.cached(c)
        if found is not None:
            return found
        start = time.monotonic()
        record: dict = {"key": c.key, "candidate": c.to_json(), "describe": c.describe(), "move": moves}
        try:
            record.update(self.measure(c))
        except SqueezeError as err:  # e.g. a pruning plan the model cannot take: recorded, the search goes on
            record.update(error=str(err), meets=False)
        record["seconds"] = round(time.monotonic() - start, 2)
        record["index"] = len(self.state["records"])
        self.state["records"].append(record)
        self.new_evaluations += 1
        self.save()
        self.report_line(record)
        return record

    def measure(self, c: Candidate) -> dict:
        """Compile ``c``; its metric on the validation data, per-layer kernel times, size, modelled
        latency and, when it may join the Pareto front, its latency timed against INT8."""
        start = time.monotonic()
        record: dict = {}
        steps = record.setdefault("step_seconds", {})
        path = self.build(c)
        steps["compile"] = round(time.monotonic() - start, 2)
        value = self.metric.fn(self.outputs(path), self.reference, self.data)
        steps["metric"] = round(time.monotonic() - start - sum(steps.values()), 2)
        layers = self.layer_times(path)
        reference = self.state["reference_metric"]
        record.update(artifact=str(path.relative_to(self.dir)), metric=value, drop=reference - value,
                      size_bytes=path.stat().st_size, layers=layers, meets=self.goal.met(value, reference),
                      gap=self.goal.gap(value, reference), latency_ms=None, vs_int8=None)
        record["kernels_ms"], record["int8_kernels_ms"] = self.kernel_times(path)
        record["estimated_ms"] = self.estimate(record)
        if c == Candidate():  # the anchor of every modelled figure; the others are timed by check()
            record["timed_ms"], record["vs_int8"] = self.time_against_baseline(path)
            record["latency_ms"] = record["timed_ms"]
            steps["timing"] = round(time.monotonic() - start - sum(steps.values()), 2)
        return record

    def check(self) -> None:
        """Time the candidates on the modelled latency / metric front that are not timed yet, all
        with the INT8 baseline in one :func:`compiler.timing.interleaved` run (worker start-up is
        paid once). ``latency_ms``: each one's ratio to INT8 times INT8's first figure, so figures
        stay comparable while the machine's load changes; ``timed_ms``: this run's own median."""
        from .timing import Engine, interleaved

        todo = sorted((r for r in latency_front(self.state["records"]) if r.get("latency_ms") is None),
                      key=lambda r: (not r["meets"], speed(r)))[:MAX_CHECKED]
        if not todo:
            return
        self.log(f"optimize: timing {len(todo)} candidate(s) of the modelled front against INT8 ...")
        base = self.cached(Candidate())
        engines = {"int8": Engine(str(self.dir / base["artifact"]))}
        engines.update({f"c{r['index']}": Engine(str(self.dir / r["artifact"])) for r in todo})
        feed = {n: np.ascontiguousarray(self.data[n][:1]) for n in self.input_names}
        start = time.monotonic()
        try:
            samples = interleaved(engines, feed, self.threads, self.rounds, self.runs)
        except RuntimeError as err:  # a worker died: the candidates stay untimed (not chosen), said so
            self.log(f"optimize: timing failed ({err}); the untimed candidates are not chosen")
            return
        medians = {k: float(np.median(v)) for k, v in samples.items()}
        for r in todo:
            r["timed_ms"], r["vs_int8"] = medians[f"c{r['index']}"], medians[f"c{r['index']}"] / medians["int8"]
            r["latency_ms"] = r["vs_int8"] * base["latency_ms"]
            r.setdefault("step_seconds", {})["timing"] = round(time.monotonic() - start, 2)
        self.state["checks"] = self.state.get("checks", 0) + 1
        self.save()

    def kernel_times(self, path: Path, repeat: int = 5) -> tuple[float, float]:
        """Sums of the kernels' profiled times (ms) of ``path`` and of the INT8 baseline, profiled
        in turn in this process, the least of ``repeat`` tries each (the machine may be busy)."""
        from .artifact import Artifact
        from .runtime import Module

        feed = {n: np.ascontiguousarray(self.data[n][:1]) for n in self.input_names}
        modules = [Module(Artifact.read(p)) for p in (path, self.dir / self.state["baseline_artifact"])]
        sums: list[list[float]] = [[], []]
        for _ in range(repeat):
            for module, out in zip(modules, sums):
                out.append(sum(float(p["us"] or 0.0) for p in module.profile(feed)) / 1e3)
        return min(sums[0]), min(sums[1])

    def estimate(self, record: dict) -> float:
        """Modelled latency (ms): the INT8 baseline's measured latency scaled by the ratio of the
        two models' profiled kernel times (taken side by side)."""
        base = self.cached(Candidate())
        latency = base["latency_ms"] if base is not None and base.get("latency_ms") else None
        return record["kernels_ms"] * (latency / record["int8_kernels_ms"] if latency else 1.0)

    def report_line(self, r: dict) -> None:
        spent = f"{self.elapsed() / 60:.1f}/{self.budget_s / 60:.1f} min"
        if "error" in r:
            self.log(f"optimize [{r['index']}] {spent} {r['describe']}: failed: {r['error']}")
            return
        best, met = choose(self.state["records"], speed)
        figure = f"{r['latency_ms']:.4f} ms timed" if r["latency_ms"] is not None else \
            f"{r['estimated_ms']:.4f} ms modelled"
        self.log(f"optimize [{r['index']}] {spent} {r['describe']}: {figure}, {self.metric.name} "
                 f"{100 * r['metric']:.2f}% ({'meets' if r['meets'] else 'misses'} {self.goal.text}); best so far: "
                 f"{speed(best):.4f} ms{'' if met else ' (goal not met yet)'}")

    def time_left(self) -> bool:
        if self.max_candidates is not None and self.new_evaluations >= self.max_candidates:
            return False
        done = [r["seconds"] - r.get("step_seconds", {}).get("timing", 0.0) for r in self.state["records"]
                if "seconds" in r]
        typical = float(np.median(done)) if done else 0.0
        base = self.cached(Candidate()) or {}
        reserve = base.get("step_seconds", {}).get("timing", 0.0)  # for the final check()
        return self.elapsed() + 0.5 * typical + reserve < self.budget_s

    def publish(self, timed_only: bool = False) -> None:
        """Copy the best record's artifact (by :func:`speed`, or timed figures only) to the output, atomically."""
        from .atomic import atomic_path

        best, _ = choose(self.state["records"], (lambda r: r.get("latency_ms")) if timed_only else speed)
        if best is None or self.state.get("published") == best["key"] and self.output.is_file():
            return
        with atomic_path(self.output) as tmp:
            shutil.copyfile(self.dir / best["artifact"], tmp)
        self.state["published"] = best["key"]
        self.save()

    # ---- moves ------------------------------------------------------------------------------------
    def lower_options(self) -> dict[str, list[str]]:
        """Per layer kind, the narrower weight schemes the target has kernels for (narrowest last)."""
        from passes.quantize.schemes import Scheme, parse_scheme

        base = parse_scheme(self.state["base_scheme"])
        out: dict[str, list[str]] = {}
        for op in self.spec.accelerates:
            if op.integer and len(op.dtypes) == 3 and op.dtypes[1].startswith("int") and op.dtypes[1] != "int8":
                bits = int(op.dtypes[1][3:])
                if bits < base.weights.bits:
                    name = Scheme(replace(base.weights, bits=bits), base.activations, base.integer_only).name
                    out.setdefault(op.op, []).append(name)
        return {k: sorted(set(v), key=lambda n: -int(re.match(r"w(\d+)", n).group(1))) for k, v in out.items()}

    def moves(self, current: Candidate, rejected: set) -> list[tuple[float, Move]]:
        """Moves from ``current`` with their expected saving (us), best first."""
        layers = {row["layer"]: row for row in self.state["layers"]}
        base_us = {row["layer"]: row["us"] or 0.0 for row in self.state["layers"]}
        precision = dict(current.precision)
        ratios = dict(current.prune)
        sqnr = self.state.get("sensitivity", {})
        options = self.lower_options()
        found = []
        for name, row in layers.items():
            mode = precision.get(name)
            if mode == "float":
                continue
            choices = options.get(row["kind"], [])
            at = -1 if mode is None else choices.index(mode) if mode in choices else len(choices)
            nxt = choices[at + 1] if at + 1 < len(choices) else None
            if nxt is None:
                continue
            move = Move("precision", name, nxt)
            saving = base_us[name] * (1 - self.learned("precision", _short(nxt)))
            safety = min(1.0, max(0.1, sqnr.get(name, {}).get(nxt, 30.0) / 40.0))
            found.append((saving * safety, move))
        for group in self.state["groups"]:
            ratio = ratios.get(group["key"], 0.0)
            now = _kept(group, ratio, self.round_to)
            nxt = next((r for r in PRUNE_RATIOS if r > ratio and ("prune", group["key"], r) not in rejected
                        and 0 < _kept(group, r, self.round_to) < now), None)
            if nxt is None:
                continue
            touched = sum(base_us.get(layer, 0.0) for layer in group["layers"])
            saving = touched * (nxt - ratio) * (1 - self.learned("prune", "")) * (1 - nxt / 2)
            found.append((saving, Move("prune", group["key"], nxt)))
        total = sum(base_us.get(layer, 0.0) for g in self.state["groups"] for layer in g["layers"])
        for r in PRUNE_RATIOS:  # all groups at once: reaches the fast end of the front in one step
            move = Move("prune_all", "*", r)
            cand = move.apply(current, [g["key"] for g in self.state["groups"]])
            if cand != current and ("prune_all", "*", r) not in rejected:
                left = sum(1 - ratios.get(g["key"], 0.0) for g in self.state["groups"]) / max(len(self.state["groups"]), 1)
                found.append((total * max(0.0, left - (1 - r)) * (1 - self.learned("prune", "")) * (1 - r), move))
                break
        found = [(s, m) for s, m in found if (m.kind, m.what) not in rejected and s >= MIN_SAVING_US]
        return sorted(found, key=lambda sm: (-sm[0], sm[1].kind, sm[1].what))

    def learned(self, kind: str, label: str) -> float:
        """The fraction of a layer's time left after moves of this kind, as measured so far (the
        model's prior: half for lower bits, the pruned share for pruning, i.e. 0 here)."""
        prior = 0.5 if kind == "precision" else 0.0
        seen = self._learned.get(f"{kind}:{label}", [])
        return (prior + sum(seen)) / (1 + len(seen))  # one measurement does not overrule the prior alone

    def learn(self, move: Move, current: Candidate, before: dict, after: dict) -> None:
        """Record what a move actually saved on the layers it touched (measured kernel times)."""
        if "layers" not in before or "layers" not in after:
            return
        b = {r["layer"]: r["us"] or 0.0 for r in before["layers"]}
        a = {r["layer"]: r["us"] or 0.0 for r in after["layers"]}
        if move.kind == "precision":
            if b.get(move.what):
                key = f"precision:{_short(move.value)}"
                self._learned.setdefault(key, []).append(a.get(move.what, 0) / b[move.what])
        elif move.kind == "prune":
            group = next(g for g in self.state["groups"] if g["key"] == move.what)
            tb = sum(b.get(layer, 0.0) for layer in group["layers"])
            ta = sum(a.get(layer, 0.0) for layer in group["layers"])
            macs = {r["layer"]: r["macs"] for r in before["layers"]}
            if all(macs.get(r["layer"]) == r["macs"] for r in after["layers"]):
                return  # the kept channels rounded back to all of them: nothing to learn
            if tb > 0:
                ideal = (1 - move.value) / (1 - dict(current.prune).get(move.what, 0.0))
                # the share of the expected saving that did not come: 0 when time falls like the channels
                self._learned.setdefault("prune:", []).append(
                    min(1.0, max(0.0, (ta / tb - ideal) / max(1 - ideal, 1e-6))))

    # ---- phases -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """FP32 reference outputs (ONNX Runtime), layers and groups, the INT8 baseline."""
        from passes.prune.pruner import analyze

        from .frontend import import_onnx, layer_calls, load_onnx
        from .ir import layer_kind
        from .pipeline import Recipe, run_passes

        program = run_passes(import_onnx(self.model, self.shapes, log=lambda _l: None), Recipe.cleanups())
        self.program = program
        self.input_names = [s.name for s in program.inputs]
        for name in self.input_names:
            want = tuple(s.shape for s in program.inputs if s.name == name)[0]
            if tuple(self.data[name].shape[1:]) != tuple(want[1:]):
                raise SqueezeError(f"validation input {name!r} has samples of shape {list(self.data[name].shape[1:])},"
                                   f" the model takes {list(want[1:])}: save it as N x "
                                   f"{'x'.join(map(str, want[1:]))}")
        self.reference = reference_outputs(load_onnx(self.model), self.data, self.input_names)
        if "reference_metric" not in self.state:
            self.state["reference_metric"] = self.metric.fn(self.reference, self.reference, self.data)
            self.state["base_scheme"] = self.spec.quant_scheme
            kinds = [layer_kind(b.value) for b in layer_calls(program.mod["main"])]
            _, _, graph, _ = analyze(self.model, self.shapes)
            self.state["groups"] = [{"key": sorted(m.layer for m in g.members if m.role == "out")[0], "name": g.name,
                                     "size": g.size, "direct": g.direct, "layers": []} for g in graph.groups
                                    if any(m.role == "out" for m in g.members)]
            self.state["kinds"] = kinds
            self.state["group_layer_names"] = [sorted({m.layer for m in g.members if m.role in ("out", "in")})
                                               for g in graph.groups if any(m.role == "out" for m in g.members)]
            self.save()

    def baseline(self) -> dict | None:
        """The plain INT8 model: compiled even past the budget (it is the fallback), evaluated if time allows."""
        c = Candidate()
        path = self.artifact_path(c)
        self.state["baseline_artifact"] = str(path.relative_to(self.dir))
        found = self.cached(c)
        if found is not None:
            return found
        if not path.is_file():
            self.log(f"optimize: compiling the plain INT8 baseline for {self.spec.name} ...")
            self.build(c)
        if self.elapsed() >= self.budget_s:
            return None
        record = self.evaluate(c, "baseline")
        if "error" not in record:
            names = {row["name"]: row["layer"] for row in record["layers"]}
            for row, kind in zip(record["layers"], self.state["kinds"]):
                row["kind"] = kind
            self.state["layers"] = record["layers"]
            for group, names_of in zip(self.state["groups"], self.state["group_layer_names"]):
                group["layers"] = [names[n] for n in names_of if n in names]
            self.save()
        return record

    def sensitivities(self) -> None:
        """Per layer and precision (the base scheme's weights, and each narrower one): the FP32
        model's output SQNR with only that layer's weights quantized (:func:`weight_sensitivity`)."""
        if "sensitivity" in self.state:
            return
        schemes = [self.state["base_scheme"]] + sorted({s for v in self.lower_options().values() for s in v})
        self.log(f"optimize: sensitivity of {len(self.state['layers'])} layers at "
                 f"{', '.join(_short(s) for s in schemes)} (ONNX Runtime, weights alone quantized)")
        sample = {k: v[: self.sensitivity_samples] for k, v in self.data.items()}
        self.state["sensitivity"] = weight_sensitivity(self.model, sample, self.input_names, self.state["layers"],
                                                       schemes)
        self.save()

    def run(self) -> SearchResult:
        self.prepare()
        base = self.baseline()
        if base is None or "error" in base:
            return self.finish_without_search(base)
        self.publish()
        self.sensitivities()
        current, rejected = Candidate(), set()
        if not base["meets"]:
            current = self.rescue(current, rejected)
        while self.time_left():
            best_now = self.cached(current)
            options = self.moves(current, rejected)
            if not options or "error" in best_now:
                break
            _, move = options[0]
            cand = move.apply(current, [g["key"] for g in self.state["groups"]])
            record = self.evaluate(cand, f"{move.kind} {move.what} -> {move.value}")
            self.learn(move, current, best_now, record)
            faster = "error" not in record and speed(record) < speed(best_now) * (1 - MIN_GAIN)
            if "error" not in record and record["meets"] and faster:
                current = cand
                self.publish()
            elif "error" not in record and record["meets"] and move.kind in ("prune", "prune_all"):
                rejected.add((move.kind, move.what, move.value))  # not faster: a larger ratio may be
            else:
                rejected.add((move.kind, move.what))
        return self.finish()

    def rescue(self, current: Candidate, rejected: set) -> Candidate:
        """The INT8 model misses the goal: keep the most sensitive layers float, one more each time."""
        sqnr = self.state.get("sensitivity", {})
        base_scheme = self.state["base_scheme"]
        order = sorted((row["layer"] for row in self.state["layers"]),
                       key=lambda name: sqnr.get(name, {}).get(base_scheme, 0.0))
        for name in order:
            if not self.time_left():
                break
            current = current.set_precision(name, "float")
            rejected.add(("precision", name))
            record = self.evaluate(current, f"float {name}")
            if "error" not in record and record["meets"]:
                self.publish()
                break
        self.publish()
        return current

    def finish_without_search(self, base: dict | None) -> SearchResult:
        from .atomic import atomic_path

        path = self.dir / self.state["baseline_artifact"]
        with atomic_path(self.output) as tmp:
            shutil.copyfile(path, tmp)
        if base is None:
            note = (f"budget of {self.budget_s:g} s too small to evaluate even one candidate: compiling the INT8 "
                    f"baseline took it all ({self.elapsed():.0f} s); returned the plain INT8 model, its accuracy not "
                    "measured: give a larger --budget")
        else:
            note = f"the plain INT8 model failed ({base['error']}); returned it unevaluated"
        self.state["note"] = note
        self.save()
        self.log(f"optimize: {note}")
        return SearchResult(self.output, base, False, note, [], self.dir, self.new_evaluations, self.state["records"])

    def finish(self) -> SearchResult:
        records = self.state["records"]
        self.check()
        best, met = choose(records)
        self.publish(timed_only=True)
        front = pareto_front(records)
        self.state["front"] = [r["key"] for r in front]
        base = self.cached(Candidate())
        speed = base["latency_ms"] / best["latency_ms"] if base and best else float("nan")
        what = f"{best['describe']}: {best['latency_ms']:.4f} ms ({speed:.2f}x the INT8 model), " \
               f"{self.metric.name} {100 * best['metric']:.2f}% (FP32 {100 * self.state['reference_metric']:.2f}%)"
        if met:
            note = f"fastest model meeting {self.goal.text}: {what}"
        else:
            note = (f"no model found meets {self.goal.text} within the budget; returned the closest one, {what}: "
                    "give a looser goal or a larger budget")
        self.state["note"], self.state["chosen"], self.state["met"] = note, best["key"], met
        self.save()
        self.log(f"optimize: {len(records)} candidates, {len(front)} on the Pareto front; {note}; wrote {self.output}")
        return SearchResult(self.output, best, met, note, front, self.dir, self.new_evaluations, records)


def _weight_axis(node, weight: np.ndarray) -> int:
    """The output-channel axis of a Conv / Gemm / MatMul node's weight initializer."""
    if node.op_type == "Conv" or weight.ndim != 2:
        return 0
    if node.op_type == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
    return 1


def weight_sensitivity(model, data: Mapping[str, np.ndarray], names: Sequence[str], layers: Sequence[dict],
                       schemes: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{layer: {scheme: dB}}``: output SQNR of the FP32 model (ONNX Runtime, on ``data``) with
    only that layer's weights quantized by that scheme's weight spec. The search's moves change
    weights only, so this is what they risk; it costs one ONNX Runtime session per pair, no
    compile. ``layers``: rows with the ONNX node ``name`` and the ``layer`` id (``conv2d_3``)."""
    import onnx
    from onnx import numpy_helper

    from passes.quantize.schemes import parse_scheme

    from .sensitivity import sqnr_db

    reference = np.concatenate([v.ravel() for v in reference_outputs(model, data, names).values()])
    nodes = {n.name: n for n in model.graph.node}
    inits = {t.name: i for i, t in enumerate(model.graph.initializer)}
    out: dict[str, dict[str, float]] = {}
    for row in layers:
        node = nodes.get(row["name"])
        if node is None or len(node.input) < 2 or node.input[1] not in inits:
            continue
        index = inits[node.input[1]]
        weight = numpy_helper.to_array(model.graph.initializer[index]).astype(np.float32)
        axis = _weight_axis(node, weight)
        for name in schemes:
            scheme = parse_scheme(name)
            scale, _ = scheme.weight_qparams(weight, axis)
            shape = [1] * weight.ndim
            shape[axis] = -1
            scale = np.asarray(scale).reshape(shape) if np.size(scale) > 1 else scale
            fake = (scheme.weights.quantize(weight, scale, 0) * scale).astype(np.float32)
            trial = onnx.ModelProto()
            trial.CopyFrom(model)
            trial.graph.initializer[index].CopyFrom(numpy_helper.from_array(fake, node.input[1]))
            approx = np.concatenate([v.ravel() for v in reference_outputs(trial, data, names).values()])
            value = sqnr_db(reference, approx)
            out.setdefault(row["layer"], {})[name] = round(value if math.isfinite(value) else 200.0, 2)
    return out


def reference_outputs(model, data: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The FP32 model's outputs over the validation samples, run by ONNX Runtime."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = session.get_inputs()[0].shape[0]
    batch = batch if isinstance(batch, int) and batch > 0 else 64  # a dynamic batch: 64 at a time
    out_names = [o.name for o in session.get_outputs()]
    return run_batches(lambda feed: dict(zip(out_names, session.run(None, feed))), data, names, batch)


def run_batches(run: Callable[[dict], Mapping[str, np.ndarray]], data: Mapping[str, np.ndarray],
                names: Sequence[str], batch: int = 1) -> dict[str, np.ndarray]:
    """``run`` over the samples of ``data`` in batches of ``batch``, outputs joined on the first axis."""
    n = len(data[names[0]])
    parts: dict[str, list] = {}
    for start in range(0, n, batch):
        feed = {k: np.ascontiguousarray(data[k][start:start + batch]) for k in names}
        short = batch - len(feed[names[0]])
        if short:
            feed = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)]) for k, v in feed.items()}
        for k, v in run(feed).items():
            parts.setdefault(k, []).append(np.asarray(v)[: batch - short])
    return {k: np.concatenate(v) for k, v in parts.items()}


def optimize(model, target=None, *, calibration, validation, goal: str | Goal = "drop<=1%",
             budget: str | float = "15m", output: str | os.PathLike, search_dir: str | os.PathLike | None = None,
             metric: str | Callable | None = None, input_shapes: Mapping[str, Sequence[int]] | None = None,
             log: Log | None = None, rounds: int = 5, runs: int = 50, round_to: int = 8, threads: int | None = None,
             max_candidates: int | None = None, sensitivity_samples: int = 64) -> SearchResult:
    """Search precision and pruning jointly for the fastest model meeting ``goal``.

    Parameters
    ----------
    model : path to an ONNX model
    target : str or TargetSpec, optional
        Where the latency is measured and the kernels come from (default: this host). It
        must run on this machine (the candidates are timed here).
    calibration : calibration source
        Quantization ranges and pruning re-fits (as for :func:`compiler.compile`).
    validation : path to .npz or dict
        One array per input (leading sample axis), and ``labels`` for top-1.
    goal : str
        ``drop<=1%`` (the metric against FP32), ``agreement>=99%``, ``top1>=90%`` or ``metric>=X``.
    budget : str or seconds
        Wall time of the whole search (over resumed runs), e.g. ``15m``.
    output : path
        The chosen artifact (.tar), rewritten atomically whenever a better one is found.
    search_dir : path, optional
        Checkpoint and candidates (default: ``OUTPUT`` without ``.tar`` plus ``.search``); an
        existing one of the same model resumes the search.
    metric : str or callable, optional
        ``agreement``, ``top1`` or ``fn(outputs, data) -> float`` (``module:function``).
    rounds, runs : int
        Timing of each candidate against the INT8 baseline (:func:`compiler.timing.interleaved`).
    round_to : int
        Kept channel counts of pruned groups are multiples of this.
    max_candidates : int, optional
        Stop after evaluating this many new candidates (besides the budget).

    Returns
    -------
    SearchResult
        The output path, the chosen record (``met`` says whether it meets the goal, ``note``
        says so in words), the Pareto front and the search directory.
    """
    from targets import get_target

    from .frontend import load_onnx

    log = log or (lambda _line: None)
    goal = goal if isinstance(goal, Goal) else parse_goal(goal)
    budget_s = parse_budget(budget)
    output = Path(output)
    if output.suffix != ".tar":
        raise SqueezeError(f"-o {output}: the chosen model is an artifact, name it e.g. {output.stem}.tar")
    from .atomic import check_writable

    check_writable(output)
    if calibration is None:
        raise SqueezeError("optimize needs calibration data: add --calib data.npz")
    spec = get_target(target)
    if not spec.runs_on_host():
        raise SqueezeError(f"optimize measures every candidate on this machine, and target {spec.name} does not run "
                           "here: search with a target of this host")
    proto = load_onnx(model)
    names = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    data = load_validation(validation, names)
    chosen = metric_of(metric, goal, LABELS in data)
    if chosen.needs_labels and LABELS not in data:
        source = validation if isinstance(validation, (str, os.PathLike)) else "the validation data"
        raise SqueezeError(f"metric {chosen.name} needs labels and {source} has no '{LABELS}' array: add one "
                           f"(numpy.savez(path, input=x, labels=y)) or use --metric agreement")
    search_dir = Path(search_dir) if search_dir is not None else output.with_name(output.stem + ".search")
    from .provenance import file_sha  # here: provenance imports TVM, and the CLI imports this module

    model_path = model if isinstance(model, (str, os.PathLike)) else None
    identity = {"model_name": Path(model_path).name if model_path else proto.graph.name,
                "model_sha256": file_sha(model_path) if model_path else
                hashlib.sha256(proto.SerializeToString()).hexdigest(),
                "target": spec.name, "goal": goal.text, "metric": chosen.name,
                "validation_sha256": hashlib.sha256(b"".join(np.ascontiguousarray(data[k]).tobytes()
                                                             for k in sorted(data))).hexdigest(),
                "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()}}
    threads = threads or int(os.environ.get("TVM_NUM_THREADS") or os.cpu_count() or 1)
    search = _Search(proto, spec, calibration, data, goal, chosen, budget_s, output, search_dir, input_shapes, log,
                     rounds, runs, round_to, threads, max_candidates, sensitivity_samples)
    search.open(identity)
    return search.run()


# --------------------------------------------------------------------------------------- CLI
def add_command(sub, model_args) -> None:
    """Register ``squeeze optimize``."""
    from .cli_args import add_calibration_args

    o = sub.add_parser("optimize", help="search precision and pruning for the fastest model meeting an accuracy goal")
    model_args(o)
    o.add_argument("-o", "--output", required=True, help="the chosen artifact (.tar), rewritten as the search improves")
    o.add_argument("--validation", required=True, help=".npz: one array per input (+ 'labels' for top1)")
    o.add_argument("--goal", default="drop<=1%", help="drop<=1%% (default), agreement>=99%%, top1>=90%% or metric>=X")
    o.add_argument("--budget", default="15m", help="wall time of the whole search, e.g. 90s, 15m, 1h (default 15m)")
    o.add_argument("--metric", help="agreement, top1 or module:function (fn(outputs, data) -> float, higher better);"
                                    " default: top1 with labels, else agreement")
    o.add_argument("--search-dir", help="checkpoint and candidates (default: OUTPUT.search); resumes when it exists")
    o.add_argument("--rounds", type=int, default=5, help="timing rounds per candidate against INT8 (default 5)")
    o.add_argument("--runs", type=int, default=50, help="timed calls per round (default 50)")
    o.add_argument("--round-to", type=int, default=8, help="kept channel counts are multiples of this (default 8)")
    add_calibration_args(o.add_argument_group("calibration"))
    o.set_defaults(func=cmd_optimize)


def cmd_optimize(args) -> None:
    from .cli_args import calibration_source, log

    if not args.calib:
        raise SqueezeError("optimize needs calibration data: add --calib data.npz (or a folder of images)")
    for value, flag in ((args.rounds, "--rounds"), (args.runs, "--runs"), (args.round_to, "--round-to")):
        if value < 1:
            raise SqueezeError(f"{flag} {value}: give a positive number")
    goal, budget = parse_goal(args.goal), parse_budget(args.budget)  # before any work
    result = optimize(args.model, args.target, calibration=calibration_source(args), validation=args.validation,
                      goal=goal, budget=budget, output=args.output, search_dir=args.search_dir, metric=args.metric,
                      input_shapes=dict(args.input_shape or []) or None, log=log, rounds=args.rounds, runs=args.runs,
                      round_to=args.round_to)
    print(result.note)
    print(f"chosen model: {result.output}; search directory: {result.search_dir} "
          f"(squeeze report {result.search_dir} -o report.html)")
