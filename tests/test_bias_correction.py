"""Per-layer bias correction and the output-MSE range search (passes.quantize.reconstruct)."""
import numpy as np
import pytest
from graphs import run_ort, small_cnn
from quant_utils import runner

import compiler
from compiler.frontend import import_onnx
from compiler.pipeline import Recipe, run_passes
from passes.quantize.layerwise import RowSampler, layer_sites
from passes.quantize.reconstruct import _bias_shift, refine
from passes.quantize.schemes import parse_scheme


def _func():
    return run_passes(import_onnx(small_cnn(), {"input": (1, 3, 16, 16)}), Recipe.cleanups()).mod["main"]


def _rows(func, n=8, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    sites = layer_sites(func)
    samplers = [RowSampler(s) for s in sites]
    # first layer: its input is the model input, so rows can be fed directly
    for sampler in samplers[:1]:
        sampler.start(n)
        for _ in range(n):
            sampler.update(rng.normal(size=(1, 3, 16, 16)).astype(np.float32) + offset)
    return sites, {s.site.var: s.rows for s in samplers if s.parts}


def test_shift_kept_where_it_helps_dropped_where_it_does_not():
    rng = np.random.default_rng(1)
    xq = rng.normal(size=(400, 1, 6)).astype(np.float32)
    grid = rng.normal(size=(1, 3, 6)).astype(np.float32)
    clean = np.einsum("mgk,gok->mgo", xq, grid)
    shift, kept = _bias_shift(xq, clean - np.array([0.5, -0.2, 0.1]), grid, 300)
    assert kept
    np.testing.assert_allclose(shift, [0.5, -0.2, 0.1], atol=1e-5)
    noisy = clean + rng.normal(size=clean.shape).astype(np.float32)  # zero-mean error: nothing to correct
    noisy[:300] += 0.3                                              # ...but the fit rows suggest a shift
    _, kept = _bias_shift(xq, noisy, grid, 300)
    assert not kept


def test_refine_records_and_shifts_for_the_layers_with_rows():
    func = _func()
    sites, rows = _rows(func, offset=2.0)  # positive inputs: weight rounding shifts the mean output
    scheme = parse_scheme("int4")
    ranges = {sites[0].x: (-3.0, 7.0)}
    out = refine(func, sites, rows, ranges, scheme, bias_correction=True)
    assert [r["layer"] for r in out.records] == [sites[0].var.name]
    assert out.records[0]["bias_correction"] == (sites[0].var in out.shifts)
    assert not out.weights  # nearest rounding, no search: realize rounds the layer's own weights


def test_range_search_never_worse_on_its_rows():
    func = _func()
    sites, rows = _rows(func, seed=2)
    rows[sites[0].var][:5] *= 30.0  # a few outlier positions stretch the min-max range
    data = rows[sites[0].var]
    ranges = {sites[0].x: (float(data.min()), float(data.max()))}
    scheme = parse_scheme("int8")
    out = refine(func, sites, rows, ranges, scheme, range_search=True)
    lo, hi = out.ranges[sites[0].x]
    assert ranges[sites[0].x][0] <= lo < 0 < hi < ranges[sites[0].x][1]  # clipped, never widened


@pytest.mark.slow  # a whole compile and calibration: 40-57 s on a loaded 2-core machine
def test_bias_correction_modes_end_to_end():
    """int4 weights on positive inputs: both modes bring the model nearer FP32 (ONNX Runtime)."""
    model = small_cnn()
    rng = np.random.default_rng(0)
    calib = (rng.normal(size=(16, 3, 16, 16)) + 1.0).astype(np.float32)
    want = [run_ort(model, {"input": t[None]})[0] for t in calib[:4]]

    def error(**options):
        config = compiler.QuantConfig("int4", calibration={"input": calib}, **options)
        run = runner(run_passes(import_onnx(model, {"input": (1, 3, 16, 16)}),
                                Recipe.cleanups() + config.recipe(progress=False)))
        return sum(float(np.sum((run(t[None]) - w) ** 2)) for t, w in zip(calib[:4], want))

    base = error(bias_correction=False)
    assert error(bias_correction="auto") < base
    assert error(bias_correction=True) < base
