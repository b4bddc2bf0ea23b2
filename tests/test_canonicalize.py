import numpy as np
import pytest
from graphs import GraphBuilder, run_ort
from onnx import numpy_helper

from compiler.frontend import import_onnx
from compiler.pipeline import Recipe, run_passes


def _clips():
    g = GraphBuilder()
    g.inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0), ("hi", 6), ("m", -1))]
    a = g.op("Clip", ["input", "lo", "hi"])       # relu6
    b = g.op("Clip", [g.op("Neg", [a]), "m"])     # lower bound only, not zero: stays a maximum
    c = g.op("Clip", [b, "lo"])                   # relu
    return g.model({"input": (1, 4, 8, 8)}, c, (1, 4, 8, 8))


def test_clip_chains_become_clip_and_relu():
    model = _clips()
    mod = run_passes(import_onnx(model), Recipe.cleanups()).mod
    text = mod.script()
    assert "R.clip(input, T.float64(0.0), T.float64(6.0))" in text
    assert "R.nn.relu" in text and "call_tir(cls.minimum" not in text
    from compiler.build import build
    from targets import get_target
    import tvm
    from tvm import relax

    program = run_passes(import_onnx(model), Recipe.cleanups())
    vm = relax.VirtualMachine(build(program, get_target("llvm")), tvm.cpu())
    x = np.random.default_rng(0).uniform(-8, 8, (1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), run_ort(model, {"input": x})[0])


def _layer_norm_written_out(square: str):
    """``ReduceMean → Sub → Pow/Mul → ReduceMean → Add → Sqrt → Div → Mul → Add`` (opset 13)."""
    g = GraphBuilder()
    g.inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("two", 2.0), ("eps", 1e-5))]
    mean = g.op("ReduceMean", ["input"], axes=[-1], keepdims=1)
    centred = g.op("Sub", ["input", mean])
    sq = g.op("Pow", [centred, "two"]) if square == "pow" else g.op("Mul", [centred, centred])
    var = g.op("ReduceMean", [sq], axes=[-1], keepdims=1)
    norm = g.op("Div", [centred, g.op("Sqrt", [g.op("Add", [var, "eps"])])])
    out = g.op("Add", [g.op("Mul", [norm, g.weight((16,), positive=True)]), g.weight((16,))])
    return g.model({"input": (1, 6, 16)}, out, (1, 6, 16))


@pytest.mark.parametrize("square", ["pow", "mul"])
def test_layer_norm_written_out_becomes_one_op(square):
    from compiler.build import build
    from targets import get_target
    import tvm
    from tvm import relax

    model = _layer_norm_written_out(square)
    program = run_passes(import_onnx(model), Recipe.cleanups())
    text = program.mod.script()
    assert "R.nn.layer_norm" in text and "R.sqrt" not in text
    x = np.random.default_rng(0).standard_normal((1, 6, 16)).astype(np.float32) * 3
    vm = relax.VirtualMachine(build(program, get_target("llvm")), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), run_ort(model, {"input": x})[0],
                               rtol=1e-4, atol=1e-4)
