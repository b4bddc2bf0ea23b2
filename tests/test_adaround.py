"""AdaRound (passes.quantize.adaround) and the layer-wise data it learns from."""
import numpy as np
import pytest
from graphs import run_ort, small_cnn
from quant_utils import runner

import compiler
from compiler.frontend import import_onnx
from compiler.pipeline import Recipe, run_passes
from passes.quantize.adaround import adaround, channel_errors, nearest_codes
from passes.quantize.layerwise import conv_rows, fake_quant
from passes.quantize.schemes import QuantSpec



def _problem(seed: int, groups: int, out: int, k: int, rows: int):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(groups, out, k)).astype(np.float32)
    mix = np.eye(k) + rng.normal(size=(k, k)) / np.sqrt(k)  # correlated inputs: rounding errors interact

    def inputs(n):
        return np.einsum("mgk,kl->mgl", np.maximum(rng.normal(size=(n, groups, k)), 0.0), mix).astype(np.float32)

    return weight, inputs(rows), inputs(rows)


@pytest.mark.parametrize("bits,groups,out,k", [(8, 1, 16, 72), (4, 1, 16, 72), (4, 12, 1, 9)])
def test_adaround_beats_nearest_on_held_out_rows(bits, groups, out, k):
    spec = QuantSpec(bits, symmetric=True, per_channel=True)
    weight, fit, held = _problem(bits + groups, groups, out, k, 1024)
    scale = np.abs(weight).max(axis=-1) / spec.qmax
    target = np.einsum("mgk,gok->mgo", fit, weight)
    codes = adaround(fit, target, weight, scale, spec, iters=300)
    near = nearest_codes(weight, scale, spec)
    assert codes.min() >= spec.qmin and codes.max() <= spec.qmax
    assert np.all(np.abs(codes - weight / scale[..., None]) < 1.0)  # only floor or ceil
    assert np.mean(codes != near) > 0.02  # it did change roundings
    truth = np.einsum("mgk,gok->mgo", held, weight)
    learned = channel_errors(held, truth, codes * scale[..., None]).sum()
    nearest = channel_errors(held, truth, near * scale[..., None]).sum()
    assert learned < 0.9 * nearest, (learned, nearest)


def test_conv_rows_are_im2col_rows():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 7, 6)).astype(np.float32)
    w = rng.normal(size=(6, 2, 3, 3)).astype(np.float32)
    conv = {"strides": [2, 1], "padding": [1, 0, 1, 2], "dilation": [1, 2], "groups": 2}
    rows = conv_rows(x, conv, 2, (3, 3), 10_000, rng)       # every output position
    grouped = w.reshape(2, 3, -1)
    got = np.sort(np.einsum("mgk,gok->mgo", rows, grouped).reshape(len(rows), -1), axis=0)
    ref = numpy_conv_float(x, w, conv)
    want = np.sort(ref.transpose(0, 2, 3, 1).reshape(-1, 6), axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def numpy_conv_float(x, w, conv):
    """Plain-loop float conv (NCHW/OIHW) with explicit [top, left, bottom, right] padding."""
    (sh, sw), (dh, dw), g = conv["strides"], conv["dilation"], conv["groups"]
    top, left, bottom, right = conv["padding"]
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    o, ig, kh, kw = w.shape
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((x.shape[0], o, oh, ow))
    for c in range(o):
        grp = c // (o // g)
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, grp * ig:(grp + 1) * ig, i * sh:i * sh + dh * kh:dh, j * sw:j * sw + dw * kw:dw]
                out[:, c, i, j] = np.einsum("nchw,chw->n", patch, w[c])
    return out


def test_fake_quant_matches_the_grid():
    spec = QuantSpec(8, symmetric=False)
    x = np.linspace(-1.5, 3.0, 101, dtype=np.float32)
    got = fake_quant(x, spec, -1.0, 2.0)
    scale = 3.0 / 255
    assert got.min() >= -1.0 - scale and got.max() <= 2.0 + scale
    assert np.all(np.abs(got - np.clip(x, -1.0, 2.0)) <= scale / 2 + 1e-6)
    assert fake_quant(np.zeros(3, np.float32), spec, -1.0, 2.0).tolist() == [0.0, 0.0, 0.0]  # zero is exact


@pytest.mark.slow  # a whole compile and calibration: 40-57 s on a loaded 2-core machine
def test_adaround_end_to_end_int4_closer_to_fp32():
    """int4 weights (where rounding matters most): the learned codes bring the model nearer FP32."""
    model = small_cnn()
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(32, 3, 16, 16)).astype(np.float32)
    test = rng.normal(size=(8, 3, 16, 16)).astype(np.float32)
    want = [run_ort(model, {"input": t[None]})[0] for t in test]

    def error(**options):
        config = compiler.QuantConfig("int4", calibration={"input": calib}, **options)
        run = runner(run_passes(import_onnx(model, {"input": (1, 3, 16, 16)}),
                                Recipe.cleanups() + config.recipe(progress=False)))
        return sum(float(np.sum((run(t[None]) - w) ** 2)) for t, w in zip(test, want))

    assert error(adaround=True, adaround_iters=200, bias_correction=False) < error(bias_correction=False)
