import numpy as np
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
