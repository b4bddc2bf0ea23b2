import numpy as np
import pytest
from graphs import GraphBuilder, assert_close_to_scale, run_ort

from compiler.frontend import import_onnx
from compiler.pipeline import Recipe, run_passes
from compiler.report import layer_table


def _conv_bn(bias: bool):
    g = GraphBuilder()
    out = g.bn(g.conv("input", 3, 6, bias=bias), 6)
    return g.model({"input": (2, 3, 8, 8)}, out, (2, 6, 8, 8))


def _gemm_bn():
    g = GraphBuilder()
    out = g.bn(g.op("Gemm", ["input", g.weight((7, 12)), g.weight((7,))], transB=1), 7)
    return g.model({"input": (4, 12)}, out, (4, 7))


def _bn_after_relu():
    g = GraphBuilder()
    out = g.bn(g.op("Relu", [g.conv("input", 3, 4)]), 4)
    return g.model({"input": (1, 3, 8, 8)}, out, (1, 4, 8, 8))


def _run(program, x):
    import tvm
    from tvm import relax

    from compiler.build import build
    from targets import get_target

    vm = relax.VirtualMachine(build(program, get_target("llvm")), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("make, folded", [
    (lambda: _conv_bn(bias=False), True),
    (lambda: _conv_bn(bias=True), True),
    (_gemm_bn, True),
    (_bn_after_relu, False),
], ids=["conv", "conv_bias", "gemm", "after_relu_kept"])
def test_fold_bn(make, folded):
    model = make()
    program = run_passes(import_onnx(model), Recipe.cleanups())
    ops = [row["op"] for row in layer_table(program.mod)]
    assert ("batch_norm" not in ops) == folded
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert_close_to_scale(_run(program, x), run_ort(model, {"input": x})[0])
