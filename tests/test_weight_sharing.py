"""The ``kmeans`` weight-sharing pass: codebook size, per-channel codebooks, centroids, accuracy."""
import numpy as np
import pytest
import tvm
from graphs import small_cnn

import compiler
from compiler import zoo
from compiler.errors import SqueezeError
from compiler.frontend import import_onnx, layer_calls
from compiler.pipeline import Recipe, run_passes
from passes import make_pass
from passes.weight_sharing import share


def _weights(mod) -> list[np.ndarray]:
    return [b.value.args[1].value.numpy() for b in layer_calls(mod["main"])
            if isinstance(b.value.args[1], tvm.ir.expr.Constant)]


@pytest.fixture(scope="module")
def cnn():
    return run_passes(import_onnx(small_cnn()), Recipe.cleanups()).mod


@pytest.mark.parametrize("init", ["linear", "kmeans++"])
def test_values_are_nearest_centroids(init):
    w = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    out = share(w, 16, init=init)
    codebook = np.unique(out)
    assert len(codebook) <= 16 and out.dtype == np.float32
    assert w.min() <= codebook.min() and codebook.max() <= w.max()
    nearest = codebook[np.abs(w[:, None] - codebook[None, :]).argmin(axis=1)]
    assert np.array_equal(out, nearest)  # every weight maps to its nearest centroid
    for c in codebook:  # Lloyd's fixed point: a centroid is (close to) the mean of its members
        assert abs(w[out == c].mean() - c) <= 0.05 * np.ptp(w)
    assert np.abs(out - w).mean() < 0.15 * np.abs(w).mean()  # Lloyd-Max, 16 levels of a normal: ~10 %


def test_zeros_stay_zero():
    w = np.random.default_rng(1).standard_normal(1000)
    w[::3] = 0.0
    out = share(w, 8, fixed=(0.0,))
    assert (out[::3] == 0).all() and len(np.unique(out)) <= 8


def test_pass_per_layer_and_per_channel(cnn):
    per_layer = _weights(make_pass("kmeans", clusters=4)(cnn))
    per_channel = _weights(make_pass("kmeans", clusters=4, per_channel=True)(cnn))
    assert per_layer and all(len(np.unique(w)) <= 4 for w in per_layer)
    conv = per_channel[1]  # the 8x8x3x3 conv, OIHW: one codebook per output channel
    assert all(len(np.unique(c)) <= 4 for c in conv) and len(np.unique(conv)) > 4
    assert all(len(np.unique(w[..., j])) <= 4 for w in per_channel[-1:] for j in range(w.shape[-1]))  # matmul


def test_relative_codebook_scales_per_channel(cnn):
    for w in _weights(make_pass("kmeans", clusters=8, relative=True)(cnn)):
        rows = np.moveaxis(w, 0 if w.ndim == 4 else -1, 0)  # one per output channel (OIHW conv, KxN matmul)
        rows = rows.reshape(len(rows), -1)
        units = rows / np.abs(rows).max(axis=1, keepdims=True)  # each channel in units of its largest weight
        assert len(np.unique(np.round(units * 127))) <= 8  # what per-channel int8 turns into codes


def test_bad_codebook_size():
    with pytest.raises(SqueezeError, match="4 to 256"):
        make_pass("kmeans", clusters=300)


def test_accuracy_sane_on_fashion_mnist():
    model, data = zoo.model_path("fmnist-resnet8"), zoo.bundled_slice()
    x, y = data["test_x"][:200], data["test_y"][:200]
    tops = {}
    for name, compress in {"fp32": None, "kmeans16": "kmeans:16"}.items():
        module = compiler.Module(compiler.compile(model, input_shapes={"input": (200, 1, 28, 28)}, compress=compress))
        tops[name] = next(iter(module.run({"input": x}).values())).argmax(axis=1)
    assert (tops["kmeans16"] == tops["fp32"]).mean() >= 0.95
    assert (tops["kmeans16"] == y).mean() >= (tops["fp32"] == y).mean() - 0.03
