"""k-means weight sharing (Deep Compression, Han et al. 2016): each layer's weights take one of k values.

The clustering is 1-D, so it is written here in numpy (sorted centroids, nearest by the midpoints,
a few Lloyd iterations): scikit-learn is not a dependency, and its general k-means buys nothing on
one dimension.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from compiler.errors import SqueezeError
from compiler.frontend import layer_calls
from compiler.ir import rebind, replace_main

from .registry import register_pass, user_errors

MIN_CLUSTERS, MAX_CLUSTERS = 4, 256  # 2 to 8 bits per weight index


def _nearest(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index into the sorted ``centroids`` of the one nearest to each value."""
    return np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)


def _initial(values: np.ndarray, free: int, init: str, rng: np.random.Generator) -> np.ndarray:
    """``free`` starting centroids: evenly spaced over [min, max] (``linear``, Deep Compression's
    best) or drawn by k-means++ (each next one with probability ∝ squared distance)."""
    if init == "linear":
        return np.linspace(values.min(), values.max(), free)
    centroids = [values[rng.integers(len(values))]]
    d2 = (values - centroids[0]) ** 2
    for _ in range(free - 1):
        centroids.append(values[rng.choice(len(values), p=d2 / d2.sum())] if d2.sum() > 0 else values[0])
        d2 = np.minimum(d2, (values - centroids[-1]) ** 2)
    return np.asarray(centroids)


def share(values: np.ndarray, clusters: int, fixed: tuple[float, ...] = (), iterations: int = 20,
          init: str = "linear", seed: int = 0) -> np.ndarray:
    """``values`` (any shape) each replaced by the nearest of at most ``clusters`` centroids after
    Lloyd iterations; the ``fixed`` centroids (e.g. 0 for pruned weights) stay where they are."""
    flat = values.reshape(-1).astype(np.float64)
    if len(np.unique(flat)) <= clusters:
        return values.copy()
    fixed_arr = np.asarray(fixed, np.float64)
    moving = flat[~np.isin(flat, fixed_arr)]
    if len(moving) == 0:
        return values.copy()
    centroids = np.concatenate([_initial(moving, clusters - len(fixed_arr), init, np.random.default_rng(seed)),
                                fixed_arr])
    is_fixed = np.arange(len(centroids)) >= clusters - len(fixed_arr)
    for _ in range(iterations):
        order = np.argsort(centroids, kind="stable")
        centroids, is_fixed = centroids[order], is_fixed[order]
        labels = _nearest(flat, centroids)
        counts = np.bincount(labels, minlength=len(centroids))
        sums = np.bincount(labels, weights=flat, minlength=len(centroids))
        update = (counts > 0) & ~is_fixed  # an empty cluster keeps its centroid
        centroids[update] = sums[update] / counts[update]
    centroids = np.sort(centroids)
    return centroids[_nearest(flat, centroids)].reshape(values.shape).astype(values.dtype)


def _output_axis(call: relax.Call) -> int:
    """The output-channel axis of a layer's weight: O of the conv kernel layout, a matmul's last."""
    return str(call.attrs.kernel_layout).index("O") if call.op.name == "relax.nn.conv2d" else -1


def share_layer(weight: np.ndarray, axis: int, clusters: int, per_channel: bool, relative: bool,
                **options) -> np.ndarray:
    """One layer's shared weights: one codebook for the layer (in units of each output channel's
    largest magnitude if ``relative``) or one per output channel; exact zeros stay zero."""
    w = np.moveaxis(weight, axis, 0)
    zero = (0.0,) if (w == 0).any() else ()
    if per_channel:
        out = np.stack([share(c, clusters, zero, **options) for c in w])
    elif relative:  # every channel keeps its magnitude: ±1 are centroids
        scale = np.abs(w).reshape(len(w), -1).max(axis=1).reshape(-1, *[1] * (w.ndim - 1))
        scale = np.where(scale > 0, scale, 1.0)
        out = share(w / scale, clusters, (-1.0, 1.0, *zero), **options) * scale
    else:
        out = share(w, clusters, zero, **options)
    return np.moveaxis(out.astype(weight.dtype), 0, axis)


@register_pass("kmeans")
def kmeans(clusters: int = 16, per_channel: bool = False, relative: bool = False, iterations: int = 20,
           init: str = "linear", seed: int = 0) -> tvm.transform.Pass:
    """Share the float weights of every conv2d/matmul layer among ``clusters`` values (k-means).

    Parameters
    ----------
    clusters : int
        Codebook entries k, 4 to 256 (``log2(k)`` bits per weight index).
    per_channel : bool
        One codebook per output channel instead of one per layer.
    relative : bool
        A layer's codebook holds multiples of each output channel's largest magnitude (``±1`` are
        entries): with per-channel int8 weight scales (``max|w| / 127``), every channel then maps
        the codebook to the same ``k`` codes, so the quantized layer has at most ``k`` distinct
        codes. Without it (float models, per-tensor scales) the layer holds ``k`` distinct values.
    iterations : int
        Lloyd iterations.
    init : str
        ``linear`` (evenly spaced over the weight range) or ``kmeans++``.
    seed : int
        Random seed of ``kmeans++``.

    Returns
    -------
    tvm.transform.Pass
        A module pass rewriting ``main``'s layers with constant float weights (other functions
        kept).
    """
    if isinstance(clusters, bool) or not isinstance(clusters, int) or not MIN_CLUSTERS <= clusters <= MAX_CLUSTERS:
        raise SqueezeError(f"kmeans codebook size {clusters!r} is out of range: give {MIN_CLUSTERS} to "
                           f"{MAX_CLUSTERS} entries, e.g. kmeans:16")
    if init not in ("linear", "kmeans++"):
        raise SqueezeError(f"kmeans init {init!r}: use linear or kmeans++")
    options = {"iterations": iterations, "init": init, "seed": seed}

    @tvm.transform.module_pass(opt_level=0, name="kmeans")
    @user_errors
    def transform(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        main, values = mod["main"], {}
        for binding in layer_calls(main):
            call = binding.value
            weight = call.args[1]
            if not isinstance(weight, tvm.ir.expr.Constant) or str(weight.value.dtype) != "float32":
                continue
            shared = share_layer(weight.value.numpy(), _output_axis(call), clusters, per_channel, relative, **options)
            values[binding.var] = relax.Call(call.op, [call.args[0], relax.const(shared), *call.args[2:]],
                                             call.attrs)
        return replace_main(mod, rebind(main, values))

    return transform
