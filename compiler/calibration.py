"""Calibration, the driver step of post-training quantization.

It builds the float model for the host with every observed tensor as an output, runs it on
the user's data, and hands the observed ranges to the pure ``realize`` pass
(:mod:`passes.quantize`). The ``quantize`` step of a recipe is this pair.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tvm

from passes import make_pass
from passes.quantize import layer_filter, layer_ids, layer_scheme_map
from passes.quantize.calibrate import CalibrationSource, ChannelMean, instrument, load_calibration, observed_vars
from passes.quantize.layerwise import RowSampler, layer_sites
from passes.quantize.reconstruct import Refined, refine
from passes.quantize.smoothquant import smoothable, smoothing_scales
from passes.quantize.observers import make_observer
from passes.quantize.schemes import Scheme, parse_scheme

from . import build as _build  # noqa: F401  (registers the host builder that host_vm uses)
from .errors import SqueezeError
from .hostexec import host_vm
from .frontend import layer_calls
from .ir import layer_names, user_inputs
from .progress import Progress, to_stderr, track
from .program import Program, TensorSpec


ADAROUND_ITERS = 400  # Adam steps per layer


def input_specs(mod: tvm.IRModule) -> list[TensorSpec]:
    """The model inputs of ``mod["main"]``."""
    return [TensorSpec(p.name, tuple(int(d) for d in p.ty.shape), str(p.ty.dtype)) for p in user_inputs(mod["main"])]


def calibrate_module(mod: tvm.IRModule, data: CalibrationSource, observer: str = "minmax", progress: bool = True,
                     samplers: Sequence[RowSampler] = (), **observer_options) -> tuple[dict, dict]:
    """Observe every float tensor of ``mod["main"]`` (weights bound) over the calibration data;
    ``samplers`` (:class:`passes.quantize.layerwise.RowSampler`) also gather layers' input rows.

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
    extra = list({s.site.x: None for s in samplers if s.site.x not in observers_of})
    watched = list(observers_of) + extra
    vm = host_vm(Program(instrument(mod, watched), {}, inputs, []))
    means = {v: ChannelMean() for v in observers_of}
    for sampler in samplers:
        sampler.start(len(batches))
    for batch in track(batches, "calibrating", enabled=progress):
        results = vm["main"](*(tvm.runtime.tensor(batch[s.name]) for s in inputs))
        arrays = {var: value.numpy() for var, value in zip(watched, results)}
        for var, observer_ in observers_of.items():
            observer_.update(arrays[var])
            means[var].update(arrays[var])
        for sampler in samplers:
            sampler.update(arrays[sampler.site.x])
    return observers_of, {v: m.mean for v, m in means.items()}


def calibrated_ranges(mod: tvm.IRModule, scheme: Scheme, calibration: CalibrationSource, observer: str,
                      progress: bool, samplers: Sequence[RowSampler] = (), **observer_options) -> tuple[dict, dict]:
    """Calibrated activation ranges for ``scheme`` and per-channel means, keyed by ``main``'s vars."""
    observers, means = calibrate_module(mod, calibration, observer, progress, samplers, **observer_options)
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
             bias_correction: bool | str = "auto", ops: Sequence[str] | None = None, observer_options: dict | None = None,
             progress: bool = True, cache: dict | None = None, layer_schemes: dict | None = None,
             adaround: bool = False, adaround_iters: int = ADAROUND_ITERS, range_search: bool = False,
             smoothquant: float | None = None):
    """The ``quantize`` recipe step: ``mod -> mod`` calibrating on the host, then realizing.

    Options are those of ``passes.quantize.realize`` (``ops``: the layer kinds the target
    runs in integers) plus ``calibration`` (see :func:`passes.quantize.calibrate.load_calibration`),
    ``observer`` (with ``observer_options``, e.g. ``{"percentile": 99.9}``) and
    ``bias_correction``. Bad options, and ``skip`` names that match no layer, fail before any
    calibration runs. ``layer_schemes``: per-layer weight schemes (mixed precision, see ``realize``).

    Layer-wise options (:mod:`passes.quantize.reconstruct`, judged on each layer's output over
    sampled calibration rows): ``adaround`` (learned rounding, ``adaround_iters`` Adam steps per
    layer), ``range_search`` (layer-input ranges and weight clipping by output MSE) and
    ``bias_correction="auto"`` (each layer's output shift corrected where that helps on held-out
    rows; ``True``: every layer, from the input means, as Nagel et al. 2019). ``smoothquant``
    (alpha, e.g. 0.5) first migrates LayerNorm outputs' outliers into the weights of the matmuls
    reading them (:mod:`passes.quantize.smoothquant`).

    ``cache`` (a dict shared by the compiles of one model at several batch sizes) keeps the
    first calibration's ranges, by position of the observed tensors, and hands them to the
    later compiles instead of calibrating again.
    """
    scheme = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
    if calibration is None:
        raise SqueezeError("quantization needs calibration data: pass --calib data.npz (or a folder of images)")
    if bias_correction not in (True, False, "auto"):
        raise SqueezeError(f"bias_correction must be true, false or 'auto', got {bias_correction!r}")
    if isinstance(adaround_iters, bool) or not isinstance(adaround_iters, int) or adaround_iters < 1:
        raise SqueezeError(f"adaround_iters must be a positive integer, got {adaround_iters!r}")
    observer_options = dict(observer_options or {})
    try:
        make_observer(observer, **observer_options)
    except (ValueError, TypeError) as err:
        raise SqueezeError(f"observer {observer}: {err}") from None
    if smoothquant is not None and (isinstance(smoothquant, bool) or not 0.0 <= float(smoothquant) <= 1.0):
        raise SqueezeError(f"smoothquant alpha must lie in [0, 1], got {smoothquant!r}")
    layerwise = adaround or range_search or bias_correction == "auto"

    def step(mod: tvm.IRModule) -> tvm.IRModule:
        check_skip_names(mod, skip)
        if smoothquant is not None:
            mod = smoothed(mod, calibration, float(smoothquant), progress)
        func = mod["main"]
        sites = refined_sites(func, scheme, skip, skip_ops, keep_first_last, ops, layer_schemes) if layerwise else []
        ranges, means = _cached(cache, observed_vars(func))
        refined = _cached_refined(cache, sites, observed_vars(func)) if layerwise else None
        if layerwise and refined is None:
            refined, means = calibrate_layerwise(mod, scheme, calibration, observer, progress, sites,
                                                 adaround_iters if adaround else 0, range_search,
                                                 bias_correction == "auto", **observer_options)
            _remember(cache, observed_vars(func), refined.ranges, means)
            _remember_refined(cache, sites, observed_vars(func), refined)
        elif ranges is None:
            ranges, means = calibrated_ranges(mod, scheme, calibration, observer, progress, **observer_options)
            _remember(cache, observed_vars(func), ranges, means)
        weights = shifts = None
        if refined is not None:
            ranges, weights, shifts = refined.ranges, refined.weights, refined.shifts
        realize = make_pass("realize", scheme=scheme, ranges=ranges,
                            means=means if bias_correction is True else None,
                            observer=observer, skip=skip, skip_ops=skip_ops, keep_first_last=keep_first_last,
                            ops=ops, layer_schemes=layer_schemes, weights=weights, shifts=shifts)
        return realize(mod)

    return step


def smoothed(mod: tvm.IRModule, calibration: CalibrationSource, alpha: float, progress: bool = True) -> tvm.IRModule:
    """``mod`` through the ``smoothquant`` pass, with per-channel activation maxima of the
    smoothable inputs (LayerNorm outputs read by matmuls) measured on the calibration data."""
    readers = smoothable(mod["main"])
    if not readers:
        return mod
    watched = list(readers)
    inputs = input_specs(mod)
    vm = host_vm(Program(instrument(mod, watched), {}, inputs, []))
    absmax = {v: 0.0 for v in watched}
    for batch in track(load_calibration(calibration, inputs), "smoothquant statistics", enabled=progress):
        results = vm["main"](*(tvm.runtime.tensor(batch[s.name]) for s in inputs))
        for var, value in zip(watched, results):
            arr = np.abs(value.numpy())
            absmax[var] = np.maximum(absmax[var], arr.reshape(-1, arr.shape[-1]).max(axis=0))
    scales = {x: smoothing_scales(absmax[x], [b.value.args[1].value.numpy() for b in readers[x]], alpha)
              for x in watched}
    return make_pass("smoothquant", scales=scales)(mod)


def calibrate_layerwise(mod: tvm.IRModule, scheme: Scheme, calibration: CalibrationSource, observer: str,
                        progress: bool, sites: list, adaround_iters: int = 0, range_search: bool = False,
                        bias_auto: bool = False, **observer_options) -> tuple[Refined, dict]:
    """Calibrate while sampling the input rows of ``sites``, then make the layer-wise choices
    (:func:`passes.quantize.reconstruct.refine`); returns them (ranges included) and the means."""
    samplers = [RowSampler(site, seed=i) for i, site in enumerate(sites)]
    ranges, means = calibrated_ranges(mod, scheme, calibration, observer, progress, samplers, **observer_options)
    bar = Progress(len(sites), "layer-wise quantization", log=to_stderr if progress else None)
    rows = {s.site.var: s.rows for s in samplers if s.parts}
    return refine(mod["main"], sites, rows, ranges, scheme, adaround_iters, range_search, bias_auto, bar.step), means


def refined_sites(func, scheme: Scheme, skip, skip_ops, keep_first_last, ops, layer_schemes) -> list:
    """The layers realize will quantize with the base scheme: those the layer-wise choices concern."""
    keep = layer_filter(skip, skip_ops, keep_first_last, func, frozenset(ops) if ops is not None else None)
    index = {b.var: i for i, b in enumerate(layer_calls(func))}
    own = layer_scheme_map(func, layer_schemes, scheme) if layer_schemes else {}
    return [s for s in layer_sites(func)
            if s.var in index and index[s.var] not in own and not keep(index[s.var], _call_of(func, s.var))]


def _call_of(func, var):
    return next(b.value for b in layer_calls(func) if b.var.same_as(var))


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


def _cached_refined(cache: dict | None, sites: list, watched: list) -> Refined | None:
    """Layer-wise results of an earlier compile of the same graph, by position of tensors and layers."""
    got = (cache or {}).get("refined")
    if got is None or got["layers"] != len(sites) or cache.get("signature") != _signature(watched):
        return None
    pick = lambda values: {s.var: v for s, v in zip(sites, values) if v is not None}  # noqa: E731
    return Refined(dict(zip(watched, got["ranges"])), pick(got["weights"]), pick(got["shifts"]), got["records"])


def _remember_refined(cache: dict | None, sites: list, watched: list, refined: Refined) -> None:
    if cache is not None:
        cache["refined"] = {"layers": len(sites), "ranges": [refined.ranges[v] for v in watched],
                            "weights": [refined.weights.get(s.var) for s in sites],
                            "shifts": [refined.shifts.get(s.var) for s in sites], "records": refined.records}
