"""Calibration, the driver step of post-training quantization.

It builds the float model for the host with every observed tensor as an output, runs it on
the user's data, and hands the observed ranges to the pure ``realize`` pass
(:mod:`passes.quantize`). The ``quantize`` step of a recipe is this pair.
"""
from __future__ import annotations

from typing import Sequence

import tvm

from passes import make_pass
from passes.quantize import layer_ids
from passes.quantize.calibrate import CalibrationSource, ChannelMean, instrument, load_calibration, observed_vars
from passes.quantize.observers import make_observer
from passes.quantize.schemes import Scheme, parse_scheme

from . import build as _build  # noqa: F401  (registers the host builder that host_vm uses)
from .errors import SqueezeError
from .hostexec import host_vm
from .ir import layer_names, user_inputs
from .progress import track
from .program import Program, TensorSpec


def input_specs(mod: tvm.IRModule) -> list[TensorSpec]:
    """The model inputs of ``mod["main"]``."""
    return [TensorSpec(p.name, tuple(int(d) for d in p.ty.shape), str(p.ty.dtype)) for p in user_inputs(mod["main"])]


def calibrate_module(mod: tvm.IRModule, data: CalibrationSource, observer: str = "minmax", progress: bool = True,
                     **observer_options) -> tuple[dict, dict]:
    """Observe every float tensor of ``mod["main"]`` (weights bound) over the calibration data.

    Returns
    -------
    observers : dict
        ``{var of mod["main"]: observer}``, ready for ``observer.range(...)``.
    means : dict
        ``{var: per-channel mean}`` (used by bias correction).
    """
    try:
        observers_of = {v: make_observer(observer, **observer_options) for v in observed_vars(mod["main"])}
    except ValueError as err:
        raise SqueezeError(str(err)) from None
    inputs = input_specs(mod)
    batches = load_calibration(data, inputs)
    watched = list(observers_of)
    vm = host_vm(Program(instrument(mod, watched), {}, inputs, []))
    means = {v: ChannelMean() for v in watched}
    for batch in track(batches, "calibrating", enabled=progress):
        results = vm["main"](*(tvm.runtime.tensor(batch[s.name]) for s in inputs))
        for var, value in zip(watched, results):
            arr = value.numpy()
            observers_of[var].update(arr)
            means[var].update(arr)
    return observers_of, {v: m.mean for v, m in means.items()}


def calibrated_ranges(mod: tvm.IRModule, scheme: Scheme, calibration: CalibrationSource, observer: str,
                      progress: bool, **observer_options) -> tuple[dict, dict]:
    """Calibrated activation ranges for ``scheme`` and per-channel means, keyed by ``main``'s vars."""
    observers, means = calibrate_module(mod, calibration, observer, progress, **observer_options)
    acts = scheme.activations
    return {v: obs.range(acts.symmetric, acts.bits, acts.unsigned) for v, obs in observers.items()}, means


def check_skip_names(mod: tvm.IRModule, skip: Sequence[str]) -> None:
    """Names to keep float that match no layer are an error (a typo would otherwise quantize it)."""
    names = set().union(*layer_ids(mod["main"]))
    unknown = sorted(set(skip) - names)
    if unknown:
        shown = sorted(layer_names(mod["main"]))[:4] or sorted(names)[:4]
        raise SqueezeError(f"layers to keep float not found: {', '.join(unknown)}: use ONNX node names or conv2d_N / "
                           f"matmul_N (e.g. {', '.join(shown)}; `squeeze inspect MODEL` lists them)")


def quantize(scheme: str | Scheme = "int8", calibration: CalibrationSource | None = None, observer: str = "minmax",
             skip: Sequence[str] = (), skip_ops: Sequence[str] = (), keep_first_last: bool = False,
             bias_correction: bool = False, ops: Sequence[str] | None = None, observer_options: dict | None = None,
             progress: bool = True, cache: dict | None = None):
    """The ``quantize`` recipe step: ``mod -> mod`` calibrating on the host, then realizing.

    Options are those of ``passes.quantize.realize`` (``ops``: the layer kinds the target
    runs in integers) plus ``calibration`` (see :func:`passes.quantize.calibrate.load_calibration`),
    ``observer`` (with ``observer_options``, e.g. ``{"percentile": 99.9}``) and
    ``bias_correction``. Bad options, and ``skip`` names that match no layer, fail before any
    calibration runs.

    ``cache`` (a dict shared by the compiles of one model at several batch sizes) keeps the
    first calibration's ranges, by position of the observed tensors, and hands them to the
    later compiles instead of calibrating again.
    """
    scheme = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
    if calibration is None:
        raise SqueezeError("quantization needs calibration data: pass --calib data.npz (or a folder of images)")
    observer_options = dict(observer_options or {})
    try:
        make_observer(observer, **observer_options)
    except (ValueError, TypeError) as err:
        raise SqueezeError(f"observer {observer}: {err}") from None

    def step(mod: tvm.IRModule) -> tvm.IRModule:
        check_skip_names(mod, skip)
        ranges, means = _cached(cache, observed_vars(mod["main"]))
        if ranges is None:
            ranges, means = calibrated_ranges(mod, scheme, calibration, observer, progress, **observer_options)
            _remember(cache, observed_vars(mod["main"]), ranges, means)
        realize = make_pass("realize", scheme=scheme, ranges=ranges, means=means if bias_correction else None,
                            observer=observer, skip=skip, skip_ops=skip_ops, keep_first_last=keep_first_last,
                            ops=ops)
        return realize(mod)

    return step


def _signature(watched: list) -> list:
    """What must agree for ranges to carry over: each observed tensor's rank and dtype."""
    return [(len(v.ty.shape), str(v.ty.dtype)) for v in watched]


def _cached(cache: dict | None, watched: list) -> tuple[dict | None, dict | None]:
    """Ranges and means of an earlier calibration of the same graph (at another batch), or Nones."""
    if not cache or cache.get("signature") != _signature(watched):
        return None, None
    return dict(zip(watched, cache["ranges"])), dict(zip(watched, cache["means"]))


def _remember(cache: dict | None, watched: list, ranges: dict, means: dict) -> None:
    if cache is not None:
        cache.update(signature=_signature(watched), ranges=[ranges[v] for v in watched],
                     means=[means.get(v) for v in watched])
