"""Calibration observers: statistics of one activation tensor → a float clipping range.

An observer sees each calibration batch once through ``update(x)`` and answers
``range(symmetric, bits, unsigned)`` with the calibrated clipping range ``(lo, hi)``
(``(-a, a)`` when symmetric); a quantization scheme derives scale and zero point from it.

Histogram observers (percentile, entropy, mse) keep one signed histogram on a grid anchored at
zero, with ``8 * bins`` fine bins on each side. When a batch falls outside the covered range the
bin width doubles and adjacent bin pairs merge: exact and deterministic, no interpolation of
counts. Percentiles are read from the fine histogram directly; the entropy and MSE searches
resample it onto ``bins`` bins spanning the observed values ([0, max |x|], or [min x, max x]
widened to contain zero), taking the density as uniform inside each fine bin, which the
oversampling keeps well below the size of a search bin.

Quantization levels used by the entropy and MSE searches:

* symmetric, signed: ``2**(bits - 1)`` levels over [0, a] (128 for int8, as in TensorRT);
* symmetric, unsigned: ``2**bits`` levels over [0, a] (meant for non-negative data: negative
  values are treated by magnitude);
* asymmetric: ``2**bits`` levels over [lo, hi].

Asymmetric entropy and MSE ranges contain zero, as the grid of a scheme does (zero point rounded
to an integer); min-max and percentile ranges report the data as it is.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

_OVERSAMPLE = 8          # fine bins per query bin, on each side of zero
_KL_EPS = 1e-4           # count given to empty bins when smoothing (as MXNet / TVM)
_MAX_SWEEPS = 16         # coordinate-descent sweeps of the asymmetric MSE search
_F32_MAX_SCALE = 1e30    # larger bin scales (tiny data) are applied in float64
_MSE_STRIDE = 8          # the MSE search tries every 8th threshold, then refines around the best


def _check_batch(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Return ``x`` as float32 with its min and max; reject empty or non-finite batches."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.size == 0:
        raise ValueError("calibration batch is empty")
    lo, hi = float(arr.min()), float(arr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("calibration data holds NaN or Inf values: clean the data")
    return arr, lo, hi


def _check_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or bits < 2:
        raise ValueError(f"bits must be an integer >= 2, got {bits!r}")


def _levels(symmetric: bool, bits: int, unsigned: bool) -> int:
    """Quantization levels available over the searched range (see the module docstring)."""
    return 2 ** (bits - 1) if symmetric and not unsigned else 2 ** bits


class Observer(ABC):
    """Base class: validates batches and queries, delegates statistics to subclasses."""

    def __init__(self) -> None:
        self._seen = False

    def update(self, x: np.ndarray) -> None:
        """Record one calibration batch.

        Parameters
        ----------
        x : np.ndarray
            Activation values of any shape (converted to float32).

        Raises
        ------
        ValueError
            If the batch is empty or holds NaN or Inf values; the observer is left unchanged.
        """
        arr, lo, hi = _check_batch(x)
        self._observe(arr, lo, hi)
        self._seen = True

    def range(self, symmetric: bool, bits: int = 8, unsigned: bool = False) -> tuple[float, float]:
        """Calibrated clipping range.

        Parameters
        ----------
        symmetric : bool
            Return ``(-a, a)`` instead of an asymmetric ``(lo, hi)``.
        bits : int
            Width of the quantized integers (used by the entropy and MSE searches).
        unsigned : bool
            Whether the integers are unsigned (doubles the levels of a symmetric search).

        Returns
        -------
        tuple of float
            ``(lo, hi)`` with ``lo <= hi``.

        Raises
        ------
        ValueError
            If no batch was recorded or ``bits`` is smaller than 2.
        """
        if not self._seen:
            raise ValueError(f"{type(self).__name__} has no data: call update() before range()")
        _check_bits(bits)
        lo, hi = self._range(symmetric, bits, unsigned)
        return float(lo), float(hi)

    @abstractmethod
    def _observe(self, x: np.ndarray, lo: float, hi: float) -> None:
        """Fold a validated batch ``x`` with extremes ``lo`` and ``hi`` into the statistics."""

    @abstractmethod
    def _range(self, symmetric: bool, bits: int, unsigned: bool) -> tuple[float, float]:
        """Range from the recorded statistics (at least one batch seen, ``bits`` checked)."""


def _minmax_range(lo: float, hi: float, symmetric: bool) -> tuple[float, float]:
    if symmetric:
        a = max(abs(lo), abs(hi))
        return -a, a
    return lo, hi


class MinMaxObserver(Observer):
    """Range of all values seen: the running minimum and maximum."""

    def __init__(self) -> None:
        super().__init__()
        self._lo, self._hi = np.inf, -np.inf

    def _observe(self, x: np.ndarray, lo: float, hi: float) -> None:
        self._lo, self._hi = min(self._lo, lo), max(self._hi, hi)

    def _range(self, symmetric: bool, bits: int, unsigned: bool) -> tuple[float, float]:
        return _minmax_range(self._lo, self._hi, symmetric)


class MovingAverageMinMaxObserver(Observer):
    """Exponential moving average of per-batch minima and maxima.

    The first batch sets the averages; each later batch updates them as
    ``avg = momentum * avg + (1 - momentum) * batch_value``.

    Parameters
    ----------
    momentum : float
        Weight of the past, in [0, 1).
    """

    def __init__(self, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = momentum
        self._lo = self._hi = 0.0

    def _observe(self, x: np.ndarray, lo: float, hi: float) -> None:
        if not self._seen:
            self._lo, self._hi = lo, hi
            return
        m = self.momentum
        self._lo = m * self._lo + (1.0 - m) * lo
        self._hi = m * self._hi + (1.0 - m) * hi

    def _range(self, symmetric: bool, bits: int, unsigned: bool) -> tuple[float, float]:
        return _minmax_range(self._lo, self._hi, symmetric)


class _Histogram:
    """Signed histogram on a zero-anchored grid whose bin width doubles as the range grows.

    ``counts[k]`` holds the values in ``[(k - half) * width, (k - half + 1) * width)``; the
    outermost bins also hold values on their outer edge.
    """

    def __init__(self, half: int) -> None:
        self.half = half
        self.counts = np.zeros(2 * half, dtype=np.int64)
        self.width = 0.0
        self.limit = 0.0          # half * width, tracked exactly
        self.zeros = 0            # values seen while every value so far was zero

    def add(self, x: np.ndarray, amax: float) -> None:
        """Count ``x``, whose largest magnitude is ``amax``."""
        if amax == 0.0:
            self._add_zeros(x.size)
            return
        self._cover(amax)
        scale = 1.0 / self.width
        x = x.ravel() if scale < _F32_MAX_SCALE else x.ravel().astype(np.float64)
        idx = np.floor(x * x.dtype.type(scale))
        np.clip(idx, -self.half, self.half - 1, out=idx)
        self.counts += np.bincount(idx.astype(np.intp) + self.half, minlength=self.counts.size)

    def _add_zeros(self, n: int) -> None:
        if self.width == 0.0:
            self.zeros += n
        else:
            self.counts[self.half] += n

    def _cover(self, amax: float) -> None:
        """Grow the grid until it covers [-amax, amax]."""
        if self.width == 0.0:
            self.width, self.limit = amax / self.half, amax
            self.counts[self.half] += self.zeros
            return
        while amax > self.limit:
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts[:] = 0
            self.counts[self.half // 2: self.half // 2 + self.half] = merged
            self.width *= 2.0
            self.limit *= 2.0

    def folded(self, positive: bool = True, negative: bool = True) -> np.ndarray:
        """Fine counts of ``|x|`` over ``[0, limit]``.

        ``positive`` and ``negative`` select the values counted (zeros count as positive).
        """
        return self.counts[self.half:] * positive + self.counts[self.half - 1::-1] * negative

    def magnitude(self, amax: float, bins: int, positive: bool = True,
                  negative: bool = True) -> np.ndarray:
        """Counts of ``|x|`` (selected as in ``folded``) on ``bins`` equal bins over ``[0, amax]``."""
        edges = np.arange(self.half + 1) * self.width
        return _resample(edges, self.folded(positive, negative), 0.0, amax, bins)

    def signed(self, lo: float, hi: float, bins: int) -> np.ndarray:
        """Counts of ``x`` on ``bins`` equal bins over ``[lo, hi]``."""
        edges = np.arange(-self.half, self.half + 1) * self.width
        return _resample(edges, self.counts, lo, hi, bins)


def _resample(edges: np.ndarray, counts: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Re-bin ``counts`` (all inside [lo, hi]) onto ``bins`` bins, density uniform per bin."""
    cdf = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    new_cdf = np.interp(np.linspace(lo, hi, bins + 1), edges, cdf)
    new_cdf[0], new_cdf[-1] = 0.0, cdf[-1]
    return np.diff(new_cdf)


class _HistogramObserver(Observer):
    """Shared state of the histogram observers: exact extremes plus a growing histogram.

    Parameters
    ----------
    bins : int
        Bins of the histogram that threshold searches run on; the histogram itself keeps
        ``8 * bins`` fine bins on each side of zero.
    """

    def __init__(self, bins: int = 2048) -> None:
        super().__init__()
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.bins = bins
        self._hist = _Histogram(bins * _OVERSAMPLE)
        self._lo, self._hi = np.inf, -np.inf
        self._exact_zeros = 0

    def _observe(self, x: np.ndarray, lo: float, hi: float) -> None:
        self._lo, self._hi = min(self._lo, lo), max(self._hi, hi)
        self._hist.add(x, max(abs(lo), abs(hi)))
        self._exact_zeros += int(np.count_nonzero(x == 0))


class _SearchObserver(_HistogramObserver):
    """Histogram observer that searches a threshold on the ``bins``-bin magnitude histogram."""

    def _range(self, symmetric: bool, bits: int, unsigned: bool) -> tuple[float, float]:
        if not symmetric:
            return self._asymmetric_range(bits)
        amax = max(abs(self._lo), abs(self._hi))
        if amax == 0.0:
            return 0.0, 0.0
        a = self._threshold(self._hist.magnitude(amax, self.bins), amax, _levels(True, bits, unsigned))
        return -a, a

    @abstractmethod
    def _threshold(self, counts: np.ndarray, amax: float, levels: int) -> float:
        """Clipping threshold from a histogram ``counts`` of magnitudes over [0, amax]."""

    @abstractmethod
    def _asymmetric_range(self, bits: int) -> tuple[float, float]:
        """Asymmetric range for ``bits``-bit integers."""


def _quantile(counts: np.ndarray, lo: float, hi: float, q: float) -> float:
    """Value below which a fraction ``q`` of the histogram mass lies (linear inside bins)."""
    cdf = np.concatenate([[0.0], np.cumsum(counts)])
    target = q * cdf[-1]
    j = int(np.searchsorted(cdf, target, side="left"))
    if j == 0:
        return lo
    width = (hi - lo) / counts.size
    return lo + width * (j - 1 + (target - cdf[j - 1]) / counts[j - 1])


class PercentileObserver(_HistogramObserver):
    """Percentile of ``|x|`` (symmetric) or of both tails of ``x`` (asymmetric).

    Percentiles are read from the fine histogram, interpolating linearly inside a bin, so they
    are usually within a fraction of a ``bins``-bin width of the exact percentile.

    Parameters
    ----------
    percentile : float
        Percentage of values inside the range, in (0, 100]; each tail keeps ``100 - percentile``
        per cent outside in the asymmetric case.
    bins : int
        Resolution of the histogram, as for the other histogram observers.
    """

    def __init__(self, percentile: float = 99.99, bins: int = 2048) -> None:
        super().__init__(bins)
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
        self.percentile = percentile

    def _range(self, symmetric: bool, bits: int, unsigned: bool) -> tuple[float, float]:
        lo, hi, q, limit = self._lo, self._hi, self.percentile / 100.0, self._hist.limit
        if symmetric:
            a = min(_quantile(self._hist.folded(), 0.0, limit, q), max(-lo, hi))
            return -a, a
        if lo == hi:
            return lo, hi
        counts = self._hist.counts
        return (max(_quantile(counts, -limit, limit, 1.0 - q), lo),
                min(_quantile(counts, -limit, limit, q), hi))


def _xlogx(x: np.ndarray) -> np.ndarray:
    return x * np.log(np.where(x > 0, x, 1.0))


def _kl_divergences(hist: np.ndarray, head: float, levels: int) -> np.ndarray:
    """KL divergence of clipping ``hist`` to its first ``i`` bins, for ``i = levels .. n``.

    Follows the TensorRT / MXNet calibration: the reference ``p`` is ``hist[:i]`` with
    ``head`` (mass clipped at the fixed end) added to bin 0 and the mass beyond bin ``i - 1``
    added to bin ``i - 1``; the candidate ``q`` merges ``hist[:i]`` into ``levels`` groups of
    ``i // levels`` bins (the last takes the remainder) and spreads each group's mass evenly over
    its bins where ``p`` is non-zero. Empty bins of ``p`` and ``q`` get ``_KL_EPS`` counts before
    normalising. Every sum is taken per group through cumulative sums, so the cost is
    ``O((n - levels) * levels)`` with no loop over candidates.
    """
    sizes = np.arange(levels, hist.size + 1)
    starts = (sizes // levels)[:, None] * np.arange(levels)
    stops = np.concatenate([starts[:, 1:], sizes[:, None]], axis=1)
    base = hist.astype(np.float64)
    base[0] += head
    csum = np.concatenate([[0.0], np.cumsum(hist, dtype=np.float64)])
    nonzero = np.concatenate([[0], np.cumsum(base != 0)])
    tail = csum[-1] - csum[sizes]
    last = base[sizes - 1]
    grown = (last == 0) & (tail > 0)            # bin i - 1 non-zero only through the tail
    qsum = csum[stops] - csum[starts]
    nnz = nonzero[stops] - nonzero[starts]
    nnz[:, -1] += grown
    psum = qsum.copy()
    psum[:, 0] += head
    psum[:, -1] += tail
    qval = np.divide(qsum, nnz, out=np.zeros_like(qsum), where=nnz > 0)
    qpos = qval > 0
    plogp = np.concatenate([[0.0], np.cumsum(_xlogx(base))])[sizes - 1] + _xlogx(last + tail)
    cross = (psum * np.log(np.where(qpos, qval, _KL_EPS))).sum(axis=1)
    p_total = csum[-1] + head + _KL_EPS * (sizes - nonzero[sizes] - grown)
    q_total = (qsum * qpos).sum(axis=1) + _KL_EPS * (sizes - (nnz * qpos).sum(axis=1))
    return (plogp - cross) / p_total + np.log(q_total / p_total)


def _best_size(hist: np.ndarray, head: float, levels: int) -> int:
    """Number of leading bins of ``hist`` whose clipping minimises the KL divergence."""
    if hist.size <= levels:
        return hist.size
    return levels + int(np.argmin(_kl_divergences(hist, head, levels)))


class EntropyObserver(_SearchObserver):
    """TensorRT-style threshold minimising the KL divergence between ``p`` and its quantized ``q``.

    Symmetric ranges search ``a`` over the right edges of the |x| histogram from bin ``levels``
    on. Asymmetric ranges run the same search on each side of zero separately (histograms of
    the positive and of the negative values), each side with ``2**(bits - 1)`` levels, or
    ``2**bits`` when the data lies on one side only; the range contains zero. With at least as
    many levels as bins the full range is returned.

    Parameters
    ----------
    bins : int
        Bins of the histogram searched.
    """

    def _threshold(self, counts: np.ndarray, amax: float, levels: int, with_zeros: bool = True) -> float:
        # Exact zeros (half of every ReLU output) sit on the grid whatever the threshold, so
        # they carry no information about it; left in, their spike drags the threshold down.
        if with_zeros:
            counts = counts.copy()
            counts[0] = max(counts[0] - self._exact_zeros, 0.0)
        return amax * _best_size(counts, 0.0, levels) / counts.size

    def _asymmetric_range(self, bits: int) -> tuple[float, float]:
        levels = 2 ** (bits - 1) if self._lo < 0.0 < self._hi else 2 ** bits
        return 0.0 - self._side(-self._lo, False, levels), self._side(self._hi, True, levels)

    def _side(self, extent: float, positive: bool, levels: int) -> float:
        """Threshold for the positive or negative values, which reach ``extent``."""
        if extent <= 0.0:
            return 0.0
        counts = self._hist.magnitude(extent, self.bins, positive=positive, negative=not positive)
        return self._threshold(counts, extent, levels, with_zeros=positive)  # zeros count as positive


def _cube(x: np.ndarray) -> np.ndarray:
    return x * x * x


def _sawtooth_integral(x: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Integral over [0, x] of the squared rounding error to the grid ``step * k``."""
    n = np.floor(x / step + 0.5)
    return n * (_cube(step) / 12.0) + _cube(x - n * step) / 3.0


def _error_integral(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, steps: int) -> np.ndarray:
    """Integral from ``lo`` to ``x`` of the squared error of quantizing to ``steps`` steps on [lo, hi].

    ``lo <= 0 <= hi``; as a scheme does, the grid is shifted by less than half a step so that
    zero is on it (rounded zero point).
    """
    step = (hi - lo) / steps
    lo = -np.round(-lo / step) * step
    hi = lo + steps * step
    inside = _sawtooth_integral(np.clip(x, lo, hi) - lo, step)
    return inside + (_cube(np.maximum(x - hi, 0.0)) - _cube(np.maximum(lo - x, 0.0))) / 3.0


def _mse_costs(edges: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               steps: int) -> np.ndarray:
    """Quantization MSE of the histogram for each candidate range ``(lo[c], hi[c])``.

    The density is taken as uniform inside each bin, so a bin's error is the integral ``F`` of
    the squared error over it, ``F(right edge) - F(left edge)``. Summing by parts leaves one
    term per edge, weighted by the density step there: edges inside empty or flat stretches of
    the histogram drop out.
    """
    lo, hi = np.reshape(lo, (-1, 1)), np.reshape(hi, (-1, 1))
    density = counts / (counts.sum() * (edges[1] - edges[0]))
    weights = -np.diff(np.concatenate([[0.0], density, [0.0]]))
    keep = weights != 0
    return _error_integral(edges[keep], lo, hi, steps) @ weights[keep]


def _coarse_to_fine_argmin(costs: Callable[[np.ndarray], np.ndarray], count: int) -> int:
    """Index in ``range(count)`` minimising ``costs(indices)``.

    Every ``_MSE_STRIDE``-th index is tried first, then every index within a stride of the best.
    """
    coarse = np.arange(0, count, _MSE_STRIDE)
    best = int(coarse[np.argmin(costs(coarse))])
    fine = np.arange(max(best - _MSE_STRIDE + 1, 0), min(best + _MSE_STRIDE, count))
    return int(fine[np.argmin(costs(fine))])


class MSEObserver(_SearchObserver):
    """Range minimising the expected quantization MSE of the histogram for the given ``bits``.

    Candidate thresholds are the histogram edges, tried coarse to fine (every 8th edge, then
    every edge around the best). Symmetric ranges search ``a`` over the |x| histogram;
    asymmetric ranges search both ends, zero inside, by coordinate descent. The expected error
    integrates the squared fake-quantization error over each bin (density uniform inside a bin).

    Parameters
    ----------
    bins : int
        Bins of the histogram; its edges are the candidate thresholds.
    """

    def _threshold(self, counts: np.ndarray, amax: float, levels: int) -> float:
        edges = np.linspace(0.0, amax, counts.size + 1)
        steps = levels - 1
        best = _coarse_to_fine_argmin(lambda j: _mse_costs(edges, counts, 0.0, edges[1 + j], steps),
                                      counts.size)
        return float(edges[1 + best])

    def _asymmetric_range(self, bits: int) -> tuple[float, float]:
        lo, hi = min(self._lo, 0.0), max(self._hi, 0.0)
        if lo == hi:
            return lo, hi
        edges = np.linspace(lo, hi, self.bins + 1)
        first, stop = _descend(edges, self._hist.signed(lo, hi, self.bins), 2 ** bits - 1)
        return float(edges[first]), float(edges[stop])


def _descend(edges: np.ndarray, counts: np.ndarray, steps: int) -> tuple[int, int]:
    """Edge indices ``(first, stop)`` of the MSE-optimal range containing zero.

    Coordinate descent from the full range: the best ``stop`` for the current ``first``, then
    the best ``first`` for that ``stop``, until neither moves.
    """
    last_nonpositive = int(np.searchsorted(edges, 0.0, side="right")) - 1
    first_nonnegative = int(np.searchsorted(edges, 0.0, side="left"))
    first, stop = 0, counts.size
    for _ in range(_MAX_SWEEPS):
        low = max(first_nonnegative, first + 1)
        new_stop = low + _coarse_to_fine_argmin(
            lambda j: _mse_costs(edges, counts, edges[first], edges[low + j], steps),
            counts.size + 1 - low)
        new_first = _coarse_to_fine_argmin(
            lambda j: _mse_costs(edges, counts, edges[j], edges[new_stop], steps),
            min(last_nonpositive, new_stop - 1) + 1)
        if (new_first, new_stop) == (first, stop):
            break
        first, stop = new_first, new_stop
    return first, stop


OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "entropy": EntropyObserver,
    "mse": MSEObserver,
}


def make_observer(name: str, **options) -> Observer:
    """Create the observer registered as ``name``.

    Parameters
    ----------
    name : str
        A key of ``OBSERVERS``.
    **options
        Keyword arguments of the observer's constructor.

    Raises
    ------
    ValueError
        If ``name`` is not registered.
    """
    if name not in OBSERVERS:
        raise ValueError(f"unknown observer '{name}': choose one of {', '.join(OBSERVERS)}")
    return OBSERVERS[name](**options)
