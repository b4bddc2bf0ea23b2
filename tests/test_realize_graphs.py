"""Realization on graph shapes: residual, concat, depthwise, pooling, float islands, attention."""
import json

import numpy as np
import pytest
from graphs import GraphBuilder, small_cnn
from quant_utils import integer_ops, runner

from compiler import zoo
from compiler.frontend import import_onnx
from compiler.pipeline import PassSpec, Recipe, run_passes
from compiler.sensitivity import sqnr_db


def _concat_depthwise_pool():
    g = GraphBuilder(seed=2)
    a = g.op("Relu", [g.conv("input", 4, 8)])
    b = g.op("Relu", [g.conv("input", 4, 8, k=1)])
    c = g.op("Concat", [a, b], axis=1)
    d = g.op("Relu", [g.conv(c, 16, 16, group=16)])                      # depthwise
    e = g.op("AveragePool", [d], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    f = g.op("Sigmoid", [e])                                             # float island
    h = g.conv(f, 16, 8, k=1)
    return g.model({"input": (1, 4, 12, 12)}, h, (1, 8, 12, 12))


GRAPHS = {
    "residual": (small_cnn, (1, 3, 16, 16), 3),
    "concat_depthwise_avgpool_sigmoid": (_concat_depthwise_pool, (1, 4, 12, 12), 4),
}


def _check(model, shape, expect_int, min_sqnr=25.0):
    rng = np.random.default_rng(0)
    calib = {"input": rng.standard_normal((32, *shape[1:])).astype(np.float32)}
    base = run_passes(import_onnx(model, {"input": shape}), Recipe.cleanups())
    quant = run_passes(import_onnx(model, {"input": shape}),
                       Recipe.cleanups() + Recipe([PassSpec("quantize", {"calibration": calib, "progress": False})]))
    assert integer_ops(quant.mod)[0] == expect_int
    x = rng.standard_normal((8, *shape[1:])).astype(np.float32)
    ref, out = runner(base), runner(quant)
    got = np.concatenate([out(x[i:i + 1]) for i in range(8)])
    want = np.concatenate([ref(x[i:i + 1]) for i in range(8)])
    assert sqnr_db(want, got) > min_sqnr
    return quant


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_shapes(name):
    make, shape, ints = GRAPHS[name]
    _check(make(), shape, ints)


def test_transformer_block_attention_in_integers():
    import onnx

    model = onnx.load(zoo.model_path("transformer-block"))
    quant = _check(model, zoo.INPUT_SHAPES["transformer-block"], expect_int=6, min_sqnr=20.0)
    modes = [r["mode"] for r in json.loads(str(quant.mod["main"].attrs["squeeze.quantized"]))["layers"]]
    assert modes.count("float") == 0, modes


def test_toml_recipe_quantizes(tmp_path):
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[[pass]]\nname = "quantize"\nscheme = "int8_integer_only"\n'
                      f'calibration = "{tmp_path / "calib.npz"}"\nobserver = "percentile"\nprogress = false\n')
    program = run_passes(import_onnx(small_cnn()), Recipe.cleanups() + Recipe.from_toml(recipe))
    info = json.loads(str(program.mod["main"].attrs["squeeze.quantized"]))
    assert info["scheme"].endswith("__fixed_point") and info["observer"] == "percentile"
    assert integer_ops(program.mod) == (3, 0)
