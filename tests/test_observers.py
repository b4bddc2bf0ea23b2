"""Calibration observers: exact statistics, clipping of outliers, growing ranges, errors."""
import time

import numpy as np
import pytest

from passes.quantize.observers import (
    OBSERVERS,
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    _kl_divergences,
    make_observer,
)

HISTOGRAM_OBSERVERS = ["percentile", "entropy", "mse"]


def _feed(observer, batches):
    for batch in batches:
        observer.update(batch)
    return observer


def _fake_quant_mse(x: np.ndarray, a: float, bits: int = 8) -> float:
    """Mean squared error of symmetric signed fake quantization of ``x`` with range (-a, a)."""
    qmax = 2 ** (bits - 1) - 1
    scale = a / qmax
    q = np.clip(np.round(x / scale), -qmax, qmax) * scale
    return float(np.mean((x.astype(np.float64) - q) ** 2))


@pytest.fixture(scope="module")
def outlier_batches():
    """Eight N(0, 1) batches of 131072 values with two outliers at +-60 (2 per million)."""
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((2, 16, 64, 64)).astype(np.float32) for _ in range(8)]
    batches[2].flat[123] = 60.0
    batches[5].flat[456] = -60.0
    return batches


def _kl_reference(hist: np.ndarray, head: float, levels: int, eps: float = 1e-4) -> np.ndarray:
    """Loop version of the TensorRT / MXNet divergence (add-eps smoothing of empty bins)."""
    out = []
    for i in range(levels, hist.size + 1):
        p = hist[:i].astype(np.float64)
        p[0] += head
        p[-1] += hist[i:].sum()
        merged, q = i // levels, np.zeros(i)
        for j in range(levels):
            start, stop = j * merged, (i if j == levels - 1 else (j + 1) * merged)
            nonzero = np.count_nonzero(p[start:stop])
            if nonzero:
                q[start:stop] = hist[start:stop].sum() / nonzero
        q[p == 0] = 0
        p, q = p + eps * (p == 0), q + eps * (q == 0)
        p, q = p / p.sum(), q / q.sum()
        out.append(np.sum(p * np.log(p / q)))
    return np.array(out)


def test_minmax_exact():
    rng = np.random.default_rng(1)
    batches = [rng.normal(0.5, 2.0, (3, 7, 5)).astype(np.float32) for _ in range(4)]
    observer = _feed(MinMaxObserver(), batches)
    data = np.concatenate([b.ravel() for b in batches])
    assert observer.range(symmetric=False, bits=8, unsigned=False) == (float(data.min()), float(data.max()))
    a = float(np.abs(data).max())
    assert observer.range(symmetric=True, bits=8, unsigned=False) == (-a, a)


def test_moving_average_formula():
    observer = MovingAverageMinMaxObserver(momentum=0.75)
    for lo, hi in [(-1.0, 2.0), (-3.0, 6.0), (0.5, 1.0)]:
        observer.update(np.array([lo, hi, (lo + hi) / 2], dtype=np.float32))
    lo = 0.75 * (0.75 * -1.0 + 0.25 * -3.0) + 0.25 * 0.5
    hi = 0.75 * (0.75 * 2.0 + 0.25 * 6.0) + 0.25 * 1.0
    assert observer.range(False, 8, False) == pytest.approx((lo, hi), rel=1e-12)
    assert observer.range(True, 8, False) == pytest.approx((-hi, hi), rel=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
def test_percentile_matches_numpy(symmetric):
    """Within a bin of a 2048-bin histogram of the data, also when the range grows across batches
    (the tail holds enough samples for neighbouring order statistics to lie closer than that)."""
    rng = np.random.default_rng(2)
    batches = [(rng.gumbel(1.0, 2.0, 50_000) * s).astype(np.float32) for s in (0.1, 1.0, 2.0, 2.0)]
    observer = _feed(PercentileObserver(percentile=99.5), batches)
    data = np.concatenate(batches).astype(np.float64)
    lo, hi = observer.range(symmetric, 8, False)
    if symmetric:
        width = np.abs(data).max() / 2048
        assert lo == -hi
        assert abs(hi - np.percentile(np.abs(data), 99.5)) <= width
    else:
        width = (data.max() - data.min()) / 2048
        assert abs(lo - np.percentile(data, 0.5)) <= width
        assert abs(hi - np.percentile(data, 99.5)) <= width


@pytest.mark.parametrize("name", HISTOGRAM_OBSERVERS)
def test_outliers_clipped(name, outlier_batches):
    observer = _feed(make_observer(name), outlier_batches)
    lo, hi = observer.range(True, 8, False)
    assert lo == -hi
    assert 2.5 < hi < 0.5 * 60.0
    alo, ahi = observer.range(False, 8, False)
    assert -0.5 * 60.0 < alo < -2.5 and 2.5 < ahi < 0.5 * 60.0


def test_mse_beats_minmax(outlier_batches):
    data = np.concatenate([b.ravel() for b in outlier_batches])
    for bits in (8, 4):
        a_mse = _feed(MSEObserver(), outlier_batches).range(True, bits, False)[1]
        a_max = _feed(MinMaxObserver(), outlier_batches).range(True, bits, False)[1]
        assert _fake_quant_mse(data, a_mse, bits) < 0.5 * _fake_quant_mse(data, a_max, bits)


def test_mse_is_optimal_among_thresholds(outlier_batches):
    data = np.concatenate([b.ravel() for b in outlier_batches])
    a = _feed(MSEObserver(), outlier_batches).range(True, 8, False)[1]
    best = _fake_quant_mse(data, a)
    for other in (0.5 * a, 0.8 * a, 1.25 * a, 2.0 * a):
        assert best <= _fake_quant_mse(data, other) * 1.001


def test_entropy_levels_follow_bits(outlier_batches):
    observer = _feed(EntropyObserver(), outlier_batches)
    assert observer.range(True, 4, False)[1] < observer.range(True, 8, False)[1]
    assert observer.range(True, 16, False) == (-60.0, 60.0)    # more levels than bins: no clipping


def test_kl_matches_reference_loop():
    rng = np.random.default_rng(3)
    hist = rng.poisson(3.0, 300) * (rng.random(300) < 0.7)
    hist[-20:] = 0
    for head, levels in [(0.0, 16), (25.0, 7)]:
        np.testing.assert_allclose(_kl_divergences(hist, head, levels), _kl_reference(hist, head, levels),
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", HISTOGRAM_OBSERVERS)
def test_growing_range_matches_single_batch(name):
    """Ranges growing 1000x across batches re-bin the histogram; the result stays close to
    seeing all the data at once."""
    rng = np.random.default_rng(4)
    batches = [(rng.standard_normal(40_000) * s).astype(np.float32) for s in (0.01, 0.1, 1.0, 10.0)]
    grown = _feed(make_observer(name), batches)
    single = _feed(make_observer(name), [np.concatenate(batches)])
    amax = max(float(np.abs(b).max()) for b in batches)
    for symmetric in (True, False):
        np.testing.assert_allclose(grown.range(symmetric, 8, False), single.range(symmetric, 8, False),
                                   atol=0.02 * amax)


@pytest.mark.parametrize("name", list(OBSERVERS))
def test_deterministic(name, outlier_batches):
    first = _feed(make_observer(name), outlier_batches)
    second = _feed(make_observer(name), outlier_batches)
    for args in [(True, 8, False), (False, 8, False), (True, 8, True), (False, 4, False)]:
        assert first.range(*args) == second.range(*args)


@pytest.mark.parametrize("name", list(OBSERVERS))
def test_no_data_and_bad_values(name):
    observer = make_observer(name)
    with pytest.raises(ValueError, match="no data"):
        observer.range(True, 8, False)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="NaN or Inf values: clean the data"):
            observer.update(np.array([[0.0, bad], [1.0, 2.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="no data"):
        observer.range(True, 8, False)
    observer.update(np.array([-1.0, 2.0], dtype=np.float32))
    with pytest.raises(ValueError, match="bits"):
        observer.range(True, 1, False)


@pytest.mark.parametrize("name", HISTOGRAM_OBSERVERS)
def test_zero_and_one_sided_data(name):
    observer = _feed(make_observer(name), [np.zeros(100, np.float32)])
    assert observer.range(True, 8, False) == (0.0, 0.0)
    observer.update(np.abs(np.random.default_rng(5).standard_normal(10_000)).astype(np.float32))
    lo, hi = observer.range(False, 8, True)
    assert 0.0 <= lo < hi <= 5.0


def test_make_observer():
    assert isinstance(make_observer("percentile", percentile=99.0), PercentileObserver)
    with pytest.raises(ValueError, match="unknown observer 'kl': choose one of minmax, moving_average"):
        make_observer("kl")


def test_histogram_observers_are_fast():
    x = np.random.default_rng(6).standard_normal((1, 64, 56, 56)).astype(np.float32)
    observer = EntropyObserver()
    start = time.perf_counter()
    for k in range(100):
        observer.update(x * (1.0 + 0.01 * k))
    assert time.perf_counter() - start < 2.0      # about 0.15 s on one core
    start = time.perf_counter()
    observer.range(True, 8, False)
    assert time.perf_counter() - start < 0.5      # about 0.01 s


def test_entropy_ignores_the_zero_spike_of_relu_outputs():
    rng = np.random.default_rng(3)
    x = np.maximum(rng.standard_normal((64, 16, 14, 14)).astype(np.float32), 0)  # half exact zeros
    obs = make_observer("entropy")
    obs.update(x)
    lo, hi = obs.range(False, 8, True)
    assert lo == 0.0 and 0.5 * x.max() < hi <= x.max()
