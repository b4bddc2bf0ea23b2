"""ConvTranspose as one Conv and a pixel shuffle: every attribute against ONNX Runtime."""
import itertools

import numpy as np
import onnx
import pytest
from graphs import assert_close_to_scale, run_ort
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.conv_transpose import decompose_conv_transpose
from compiler.errors import SqueezeError


def _model(cin, og, group, kernel, strides, dilations=None, pads=None, out_pads=None, length=(5, 7), **extra):
    rng = np.random.default_rng(0)
    rank = len(kernel)
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), group=group,
                 dilations=list(dilations or [1] * rank), output_padding=list(out_pads or [0] * rank), **extra)
    if pads is not None:
        attrs["pads"] = list(pads)
    inits = [numpy_helper.from_array(rng.standard_normal((cin, og, *kernel)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(og * group).astype(np.float32), "b")]
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, *length])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _decomposed(model):
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    out = decompose_conv_transpose(onnx.ModelProto.FromString(model.SerializeToString()), {"x": shape})
    assert "ConvTranspose" not in {n.op_type for n in out.graph.node}
    return out, np.random.default_rng(1).standard_normal(shape).astype(np.float32)


CASES_2D = [(k, s, d, p, op, g) for k, s, d, p, op, g in itertools.product([1, 2, 3, 4], [1, 2, 3], [1, 2], [0, 1],
                                                                           [0, 1], [1, 2])
            if op < s and 2 * p < 4 * s + (k - 1) * d + op]


@pytest.mark.parametrize("k,s,d,p,op,g", CASES_2D[::3])
def test_2d_attributes_match_ort(k, s, d, p, op, g):
    model = _model(4, 3, g, (k, k), (s, s), (d, d), (p, p, p, p), (op, op))
    decomposed, x = _decomposed(model)
    np.testing.assert_allclose(run_ort(decomposed, {"x": x})[0], run_ort(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("extra", [dict(pads=(1, 0, 0, 2)), dict(auto_pad="SAME_UPPER"), dict(auto_pad="SAME_LOWER"),
                                   dict(output_shape=[10, 12]), dict(output_shape=[11, 12])])
def test_asymmetric_pads_auto_pad_and_output_shape(extra):
    model = _model(4, 3, 1, (3, 2), (2, 2), length=(5, 6), **extra)
    decomposed, x = _decomposed(model)
    np.testing.assert_allclose(run_ort(decomposed, {"x": x})[0], run_ort(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k,s,p", [(4, 2, 1), (3, 2, 0), (5, 4, 2)])
def test_1d_and_depthwise(k, s, p):
    for model in (_model(4, 3, 1, (k,), (s,), pads=(p, p), length=(9,)), _model(4, 1, 4, (k, k), (s, s), pads=[p] * 4)):
        decomposed, x = _decomposed(model)
        np.testing.assert_allclose(run_ort(decomposed, {"x": x})[0], run_ort(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_stride2_kernel2_head_is_a_pointwise_conv():
    decomposed, _ = _decomposed(_model(8, 4, 1, (2, 2), (2, 2)))
    conv = next(n for n in decomposed.graph.node if n.op_type == "Conv")
    weight = next(t for t in decomposed.graph.initializer if t.name == conv.input[1])
    assert list(weight.dims) == [16, 8, 1, 1] and conv.name == "up"


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_compiles_fp32_and_int8_against_ort(quantize):
    model = _model(8, 4, 1, (4, 4), (2, 2), pads=(1, 1, 1, 1), length=(6, 6))
    x = np.random.default_rng(2).standard_normal((1, 8, 6, 6)).astype(np.float32)
    config = compiler.QuantConfig("int8", calibration={"x": x}) if quantize else None
    art = compiler.compile(model, quantize=config)
    got = next(iter(compiler.Module(art).run({"x": x}).values()))
    want = run_ort(model, {"x": x})[0]
    if quantize:
        assert 10 * np.log10((want ** 2).sum() / ((want - got) ** 2).sum()) > 25  # SQNR, dB
    else:
        assert_close_to_scale(got, want)


@pytest.mark.parametrize("attrs,message", [
    (dict(pads=(1, 1)), r"pads \[1, 1\] must be 4"),
    (dict(out_pads=(2, 2)), r"output_padding \[2, 2\] out of range"),
    (dict(group=3), r"group=3 do not fit"),
])
def test_malformed_attributes_name_the_node(attrs, message):
    args = dict(cin=4, og=3, group=1, kernel=(3, 3), strides=(2, 2))
    args.update(attrs)
    with pytest.raises(SqueezeError, match=r"ConvTranspose 'up': .*" + message):
        _decomposed(_model(**args))
