"""Layer-output-driven choices of post-training quantization, per conv/matmul layer.

Given each layer's sampled input rows (:mod:`.layerwise`) and the calibrated ranges, this
decides, judging every choice by the *layer's output* error rather than a tensor's own:

* ``range_search``: the clipping range of each layer input (when only layers read it) and a
  per-output-channel weight clipping ratio, each the candidate with the least output MSE;
* ``adaround``: learned rounding of the weight codes (:mod:`.adaround`);
* ``bias_correction="auto"``: the mean output shift that quantization causes, subtracted from
  the layer's bias where that lowers the output error on held-out rows.

Rows are split: the first 3/4 fit (search, AdaRound, the shift), the last 1/4 judge (AdaRound
per output channel, the bias correction per layer), so nothing is kept that only fits its data.
The result is data for :func:`passes.quantize.realize`: ranges, each layer's weight codes and
scales, and bias shifts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tvm import relax

from compiler.ir import bindings, op_name, use_counts

from .adaround import adaround, channel_errors, nearest_codes
from .layerwise import Site, fake_quant, outputs
from .schemes import Scheme

SAME_CODES = ("relax.reshape", "relax.permute_dims", "relax.flatten", "relax.squeeze", "relax.expand_dims",
              "relax.strided_slice", "relax.nn.max_pool2d")  # realize runs these on codes of their input's scale
ACT_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.3)
WEIGHT_RATIOS = tuple(np.linspace(1.0, 0.5, 11))


@dataclass
class Refined:
    """What the layer-wise choices give realize, keyed by vars of ``main``."""

    ranges: dict
    weights: dict = field(default_factory=dict)   # layer var -> (codes, per-channel scales) in the weight's layout
    shifts: dict = field(default_factory=dict)    # layer var -> per-channel shift to subtract from the bias
    records: list = field(default_factory=list)   # per layer: what was chosen and the errors


def range_sources(func: relax.Function) -> dict:
    """``{var: var whose calibrated range its codes carry}`` through ops realize runs on codes."""
    source: dict = {}
    for b in bindings(func):
        value = b.value
        if isinstance(value, relax.TupleGetItem) and isinstance(value.tuple_value, relax.Var):
            parent = value.tuple_value
            source[b.var] = source.get(parent, parent)
        elif op_name(value) in SAME_CODES and isinstance(value.args[0], relax.Var) or op_name(value) == "relax.split":
            arg = value.args[0]
            source[b.var] = source.get(arg, arg)
    return source


def _split(rows: np.ndarray) -> int:
    return max(1, (3 * len(rows)) // 4) if len(rows) > 3 else len(rows)


def _relative(err: float, target: np.ndarray) -> float:
    return float(err / max(float(np.sum(np.square(target, dtype=np.float64))), 1e-30))


def refine(func: relax.Function, sites: list[Site], rows: dict, ranges: dict, scheme: Scheme,
           adaround_iters: int = 0, range_search: bool = False, bias_correction: bool = False,
           step: Callable[[], None] | None = None) -> Refined:
    """Layer-wise choices for ``sites`` (see the module docstring).

    Parameters
    ----------
    rows : dict
        ``{site var: [M, G, K] float rows}`` of each layer's input (:class:`.layerwise.RowSampler`).
    ranges : dict
        Calibrated ``{var: (lo, hi)}``; a copy with the searched input ranges is returned.
    adaround_iters : int
        Adam steps of AdaRound per layer (0: nearest rounding).
    step : callable, optional
        Called once per layer done (progress).
    """
    acts, wspec = scheme.activations, scheme.weights
    out = Refined(dict(ranges))
    source = range_sources(func)
    sites = [s for s in sites if s.var in rows and len(rows[s.var])]
    if range_search:
        _search_inputs(func, sites, rows, out.ranges, scheme, source)
    learnable = not wspec.log
    for site in sites:
        x_src = source.get(site.x, site.x)
        if x_src not in out.ranges:
            continue
        data = rows[site.var]
        fit = _split(data)
        xq = fake_quant(data, acts, *out.ranges[x_src])
        wg = site.grouped()
        target = outputs(data, wg)
        scale = site.channel_grouped(scheme.weight_qparams(site.weight, site.axis)[0]).astype(np.float64)
        record = {"layer": site.var.name}
        if range_search and learnable and wspec.per_channel and not wspec.power_of_two:
            scale = scale * _weight_ratios(xq[:fit], target[:fit], wg, scale, wspec)
        codes = nearest_codes(wg, scale, wspec)
        base = channel_errors(xq[fit:], target[fit:], codes * scale[..., None])
        record["nearest"] = _relative(base.sum(), target[fit:])
        if adaround_iters and learnable:
            learned = adaround(xq[:fit], target[:fit], wg, scale, wspec, iters=adaround_iters)
            err = channel_errors(xq[fit:], target[fit:], learned * scale[..., None])
            better = err <= base                         # judged per output channel on held-out rows
            codes = np.where(better[..., None], learned, codes)
            base = np.where(better, err, base)
            record["adaround"] = _relative(base.sum(), target[fit:])
        grid = (codes * scale[..., None]).astype(np.float32)
        if range_search or adaround_iters:
            flat = scale.reshape(-1) if wspec.per_channel else scale.reshape(-1)[:1]
            out.weights[site.var] = (site.ungrouped(codes).astype(np.int8), flat.astype(np.float32))
        if bias_correction:
            shift, kept = _bias_shift(xq, target, grid, fit)
            record["bias_correction"] = kept
            if kept:
                out.shifts[site.var] = shift
        out.records.append(record)
        if step is not None:
            step()
    return out


def _weight_ratios(xq: np.ndarray, target: np.ndarray, wg: np.ndarray, scale: np.ndarray, spec) -> np.ndarray:
    """Per output channel, the clipping ratio of its weight scale with the least output error."""
    errors = np.stack([channel_errors(xq, target, nearest_codes(wg, scale * r, spec) * (scale * r)[..., None])
                       for r in WEIGHT_RATIOS])                      # [R, G, O]
    return np.asarray(WEIGHT_RATIOS)[errors.argmin(axis=0)]


def _bias_shift(xq: np.ndarray, target: np.ndarray, grid: np.ndarray, fit: int) -> tuple[np.ndarray, bool]:
    """The per-channel mean output error and whether subtracting it helps on held-out rows."""
    diff = outputs(xq, grid) - target                                 # [M, G, O]
    shift = diff[:fit].mean(axis=0)
    held = diff[fit:]
    kept = len(held) > 0 and float(np.sum((held - shift) ** 2)) < float(np.sum(held ** 2))
    return diff.mean(axis=0).reshape(-1).astype(np.float64), kept


def _search_inputs(func: relax.Function, sites: list[Site], rows: dict, ranges: dict, scheme: Scheme,
                   source: dict) -> None:
    """Shrink the range of each input read only by layers to the ratio with the least output error."""
    uses, _ = use_counts(func)
    readers: dict = {}
    for site in sites:
        readers.setdefault(site.x, []).append(site)
    for x, group in readers.items():
        if x in source or x not in ranges or uses.get(x, 0) != len(group):
            continue
        lo, hi = ranges[x]
        fixed = []
        for site in group:
            data, wg = rows[site.var], site.grouped()
            scale = site.channel_grouped(scheme.weight_qparams(site.weight, site.axis)[0]).astype(np.float64)
            grid = (nearest_codes(wg, scale, scheme.weights) * scale[..., None]).astype(np.float32)
            fixed.append((data, outputs(data, wg), grid))
        costs = [sum(_relative(channel_errors(fake_quant(data, scheme.activations, lo * r, hi * r), target, grid).sum(),
                               target) for data, target, grid in fixed) for r in ACT_RATIOS]
        r = ACT_RATIOS[int(np.argmin(costs))]
        ranges[x] = (lo * r, hi * r)
