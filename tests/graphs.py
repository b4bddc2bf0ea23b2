"""Small ONNX graphs built with onnx.helper for tests (random weights, seeded), and a bare Relax
module's build for a target."""
from __future__ import annotations

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from compiler.build import lower
from compiler.program import Program


class GraphBuilder:
    """Accumulates nodes and initializers; ``model()`` returns a checked ModelProto."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def weight(self, shape, scale: float = 0.3, positive: bool = False) -> str:
        self._n += 1
        name = f"w{self._n}"
        arr = self.rng.uniform(0.5, 1.5, shape) if positive else self.rng.standard_normal(shape) * scale
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self._n += 1
        out = f"t{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name or f"{op_type.lower()}_{self._n}", **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, bias: bool = True, **attrs) -> str:
        ins = [x, self.weight((cout, cin // attrs.get("group", 1), k, k))]
        if bias:
            ins.append(self.weight((cout,)))
        return self.op("Conv", ins, pads=[k // 2] * 4, strides=[stride, stride], **attrs)

    def bn(self, x: str, c: int) -> str:
        return self.op("BatchNormalization", [x, self.weight((c,), positive=True), self.weight((c,)),
                                              self.weight((c,)), self.weight((c,), positive=True)])

    def model(self, inputs: dict[str, tuple], output: str, out_shape: tuple, opset: int = 13) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "g",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(out_shape))],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        onnx.checker.check_model(m)
        return m


def small_cnn(batch: int | str = 1) -> onnx.ModelProto:
    """Conv-BN-ReLU ×2 with a residual add, global pool, Gemm: 1×3×16×16 → 1×10."""
    g = GraphBuilder()
    x = g.op("Relu", [g.bn(g.conv("input", 3, 8, bias=False), 8)])
    y = g.bn(g.conv(x, 8, 8), 8)
    x = g.op("Relu", [g.op("Add", [x, y])])
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    out = g.op("Gemm", [x, g.weight((10, 8)), g.weight((10,))], transB=1)
    return g.model({"input": (batch, 3, 16, 16)}, out, (batch, 10))


def run_ort(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Reference outputs from ONNX Runtime (CPU, 2 threads)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def assert_close_to_scale(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4) -> None:
    """max |a - e| ≤ rtol · max |e| (error relative to the output's scale)."""
    scale = max(float(np.abs(expected).max()), 1e-6)
    err = float(np.abs(actual.astype(np.float64) - expected).max())
    assert err <= rtol * scale, f"max abs diff {err:.3g} > {rtol} × output scale {scale:.3g}"


def built_for(mod: tvm.IRModule, spec) -> tuple[list[str], relax.VirtualMachine]:
    """A bare Relax module (weights as constants) through ``spec``'s build
    (:func:`compiler.build.lower`): its kernels' names and a VM running it."""
    lowered = lower(Program(mod, {}, [], []), spec)
    names = [g.name_hint for g, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    return names, relax.VirtualMachine(tvm.compile(lowered, spec.target), tvm.cpu())
