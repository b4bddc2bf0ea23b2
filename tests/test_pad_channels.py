"""Float matmuls and convs with an output-channel count no vector divides get whole-vector,
packed weights."""
import numpy as np
import pytest
import tvm
from tvm import relax

from graphs import built_for

import targets
from targets.schedules.common import predicated_columns, vector_isa
from targets.schedules.pad_channels import pad_output_channels, padded_channels


@pytest.fixture(scope="module")
def spec():
    return targets.get_target("x86")


def _gemm(rows: int, depth: int, cols: int, constant_weight: bool = True) -> tuple[tvm.IRModule, np.ndarray, np.ndarray]:
    """``x @ W + b`` (``W`` a constant, or a second input), with its W and b."""
    rng = np.random.default_rng(cols)
    w = rng.standard_normal((depth, cols)).astype("float32")
    b = rng.standard_normal(cols).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, rows, depth), "float32"))
    params = [x] if constant_weight else [x, relax.Var("w", relax.TensorType((depth, cols), "float32"))]
    with bb.function("main", params):
        with bb.dataflow():
            weight = relax.const(w) if constant_weight else params[1]
            out = bb.emit_output(bb.emit(relax.op.add(relax.op.matmul(x, weight), relax.const(b))))
        bb.emit_func_output(out)
    return bb.get(), w, b


def _matmul_weight_shapes(mod: tvm.IRModule) -> list[tuple[int, ...]]:
    shapes = []
    relax.analysis.post_order_visit(mod["main"], lambda e: shapes.append(tuple(int(d) for d in e.args[1].ty.shape))
                                    if isinstance(e, relax.Call) and e.op == tvm.ir.Op.get("relax.matmul") else None)
    return shapes


def test_padded_channels_round_up_to_whole_vectors():
    assert padded_channels(8210, 16) == 8256  # wide: four vectors at a time
    assert padded_channels(6625, 16) == 6656
    assert padded_channels(20, 16) == 32  # narrow: one vector at a time
    assert padded_channels(1000, 4) == 1008
    assert [n for n in (18, 20, 24, 257, 1000, 1001, 8210) if predicated_columns(n, 16)] == [18, 257, 1001, 8210]


@pytest.mark.parametrize("cols", [1001, 18])
def test_odd_columns_padded_and_sliced_back(spec, cols):
    mod, w, b = _gemm(4, 64, cols)
    padded = pad_output_channels(spec.target)(mod)
    assert _matmul_weight_shapes(padded) == [(64, padded_channels(cols, vector_isa(spec.target).lanes("float32")))]
    x = np.random.default_rng(1).standard_normal((1, 4, 64)).astype("float32")
    want = x.astype(np.float64) @ w + b
    built = tvm.compile(relax.transform.LegalizeOps()(padded), "llvm")
    got = relax.VirtualMachine(built, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert got.shape == (1, 4, cols)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cols", [10, 16, 256, 24, 1000])
def test_columns_that_vectors_divide_or_that_fit_one_are_left(spec, cols):
    """Fits one register (10, 16), whole registers (256), or 8-lane vectors (24, 1000)."""
    mod, _, _ = _gemm(4, 32, cols)
    assert _matmul_weight_shapes(pad_output_channels(spec.target)(mod)) == [(32, cols)]


def test_activation_operand_padded_at_run_time(spec):
    """Attention's ``Q @ K^T`` over 1001 tokens: the second operand is an input, zero-padded by
    a ``pad`` in the graph."""
    mod, _, b = _gemm(4, 32, 1001, constant_weight=False)
    padded = pad_output_channels(spec.target)(mod)
    lanes = vector_isa(spec.target).lanes("float32")
    assert _matmul_weight_shapes(padded) == [(32, padded_channels(1001, lanes))]
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((1, 4, 32)).astype("float32"), rng.standard_normal((32, 1001)).astype("float32")
    built = tvm.compile(relax.transform.LegalizeOps()(padded), "llvm")
    got = relax.VirtualMachine(built, tvm.cpu())["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy()
    np.testing.assert_allclose(got, x.astype(np.float64) @ w + b, rtol=1e-4, atol=1e-4)


def test_vocabulary_gemm_gets_a_packed_kernel(spec):
    """The CPU target's legalization pads: the fused matmul + slice + bias kernel is scheduled
    with prepacked weight panels and still computes x @ W + b."""
    mod, w, b = _gemm(8, 128, 1001)
    kernels, vm = built_for(mod, spec)
    assert len(kernels) == 1 and kernels[0].endswith("_prepacked"), kernels
    x = np.random.default_rng(2).standard_normal((1, 8, 128)).astype("float32")
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, x.astype(np.float64) @ w + b, rtol=1e-4, atol=1e-4)


def _conv(out_channels: int, groups: int = 1) -> tuple[tvm.IRModule, np.ndarray]:
    """An NHWC/OHWI 3x3 conv (what ConvertLayout leaves for the CPU targets), with its weight."""
    w = np.random.default_rng(out_channels).standard_normal((out_channels, 3, 3, 8 // groups)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 6, 7, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = relax.op.nn.conv2d(x, relax.const(w), padding=1, groups=groups, data_layout="NHWC",
                                   kernel_layout="OHWI", out_dtype="float32")
            out = bb.emit_output(bb.emit(relax.op.sigmoid(y)))
        bb.emit_func_output(out)
    return bb.get(), w


def _conv_weight_shapes(mod: tvm.IRModule) -> list[tuple[int, ...]]:
    shapes = []
    relax.analysis.post_order_visit(mod["main"], lambda e: shapes.append(tuple(int(d) for d in e.args[1].ty.shape))
                                    if isinstance(e, relax.Call) and e.op == tvm.ir.Op.get("relax.nn.conv2d") else None)
    return shapes


def _conv_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """NHWC x OHWI, stride 1, padding 1, then the sigmoid, in float64 numpy."""
    padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, wd = x.shape[1:3]
    out = sum(np.einsum("nhwi,oi->nhwo", padded[:, i:i + h, j:j + wd], w[:, i, j])
              for i in range(3) for j in range(3))
    return 1 / (1 + np.exp(-out))


def test_detection_head_conv_padded_and_sliced_back(spec):
    """18 output channels (a YOLOv8 class head): padded to whole vectors, outputs unchanged."""
    mod, w = _conv(18)
    padded = pad_output_channels(spec.target)(mod)
    lanes = vector_isa(spec.target).lanes("float32")
    assert _conv_weight_shapes(padded) == [(padded_channels(18, lanes), 3, 3, 8)]
    kernels, vm = built_for(mod, spec)
    assert len(kernels) == 1 and kernels[0].endswith("_prepacked"), kernels
    x = np.random.default_rng(3).standard_normal((1, 6, 7, 8)).astype("float32")
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, _conv_reference(x, w), rtol=1e-5, atol=1e-5)


def test_grouped_conv_left(spec):
    mod, _ = _conv(18, groups=2)
    assert _conv_weight_shapes(pad_output_channels(spec.target)(mod)) == [(18, 3, 3, 4)]


def test_prime_row_count_padded_to_eight(spec):
    """13 rows (a ViT's 257 tokens in small): no tile height divides them, so x gets 3 zero rows."""
    mod, w, b = _gemm(13, 32, 48)
    padded = pad_output_channels(spec.target)(mod)
    shapes = []
    relax.analysis.post_order_visit(padded["main"], lambda e: shapes.append(tuple(int(d) for d in e.args[0].ty.shape))
                                    if isinstance(e, relax.Call) and e.op == tvm.ir.Op.get("relax.matmul") else None)
    assert shapes == [(1, 16, 32)]
    x = np.random.default_rng(5).standard_normal((1, 13, 32)).astype("float32")
    built = tvm.compile(relax.transform.LegalizeOps()(padded), "llvm")
    got = relax.VirtualMachine(built, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert got.shape == (1, 13, 48)
    np.testing.assert_allclose(got, x.astype(np.float64) @ w + b, rtol=1e-4, atol=1e-4)


def test_integer_attention_matmul_padded_bit_exact(spec):
    """An int8 activation x activation matmul the integer kernels leave (uint8 x int8 -> int32, 13
    rows, 37 columns): rows and columns padded, the result bit-exact against numpy."""
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((1, 2, 13, 24), "uint8"))
    k = relax.Var("k", relax.TensorType((1, 2, 24, 37), "int8"))
    with bb.function("main", [a, k]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.matmul(a, k, out_dtype="int32")))
        bb.emit_func_output(out)
    padded = pad_output_channels(spec.target)(bb.get())
    assert _matmul_weight_shapes(padded) == [(1, 2, 24, padded_channels(37, vector_isa(spec.target).lanes("int32")))]
    rng = np.random.default_rng(6)
    av, kv = rng.integers(0, 256, (1, 2, 13, 24)).astype("uint8"), rng.integers(-128, 128, (1, 2, 24, 37)).astype("int8")
    _, vm = built_for(bb.get(), spec)
    got = vm["main"](tvm.runtime.tensor(av), tvm.runtime.tensor(kv)).numpy()
    np.testing.assert_array_equal(got, np.matmul(av.astype(np.int64), kv.astype(np.int64)))


def test_symbolic_shapes_left(spec):
    """A dynamic token count: nothing to pad to at compile time."""
    n = tvm.tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, n, 32), "float32"))
    w = relax.Var("w", relax.TensorType((32, n), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.matmul(x, w)))
        bb.emit_func_output(out)
    script = pad_output_channels(spec.target)(bb.get()).script()
    assert "R.nn.pad" not in script and "R.strided_slice" not in script
