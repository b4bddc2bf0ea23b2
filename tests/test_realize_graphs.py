"""Realization on graph shapes: residual, concat, depthwise, pooling, float islands, attention."""
import json

import numpy as np
import pytest
from graphs import GraphBuilder, small_cnn
from onnx import numpy_helper
from quant_utils import integer_ops, runner

from compiler import zoo
from compiler.frontend import import_onnx
from compiler.pipeline import PassSpec, Recipe, run_passes
from compiler.report import float_islands
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


def _se_hardswish_resize_bn():
    """MobileNetV3/OCR shapes: HardSwish, squeeze-excitation with HardSigmoid, nearest Resize,
    a BatchNorm left unfolded after a residual add, SiLU and GELU-free tails."""
    g = GraphBuilder(seed=3)
    x = g.op("HardSwish", [g.conv("input", 4, 8)])
    gate = g.op("HardSigmoid", [g.conv(g.op("Relu", [g.conv(g.op("GlobalAveragePool", [x]), 8, 4, k=1)]), 4, 8, k=1)],
                alpha=0.2, beta=0.5)
    se = g.op("Mul", [x, gate])
    scales = g.weight((4,))
    g.inits[-1] = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), scales)
    up = g.op("Resize", [se, "", scales], mode="nearest")
    residual = g.op("Add", [up, g.conv(up, 8, 8)])
    bn = g.op("Add", [g.op("Mul", [residual, g.weight((8, 1, 1), positive=True)]), g.weight((8, 1, 1))])
    silu = g.op("Mul", [bn, g.op("Sigmoid", [bn])])
    return g.model({"input": (1, 4, 12, 12)}, g.conv(silu, 8, 8, k=1), (1, 8, 24, 24), opset=14)


GRAPHS = {
    "residual": (small_cnn, (1, 3, 16, 16), 3),
    "concat_depthwise_avgpool_sigmoid": (_concat_depthwise_pool, (1, 4, 12, 12), 4),
    "se_hardswish_resize_bn_silu": (_se_hardswish_resize_bn, (1, 4, 12, 12), 5),
}


def _check(model, shape, expect_int, min_sqnr=25.0, islands=None):
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
    if islands is not None:
        assert float_islands(quant.mod["main"])[0] == islands
    return quant


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_shapes(name):
    make, shape, ints = GRAPHS[name]
    _check(make(), shape, ints, islands={})


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
