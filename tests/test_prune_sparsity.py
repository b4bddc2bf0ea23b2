"""N:M, block and element-wise masks; the BSR kernel and the block_sparse pass."""
import numpy as np
import onnx
import pytest
import tvm
from graphs import GraphBuilder, assert_close_to_scale, run_ort

import compiler
from passes.prune import PruneConfig, prune_model
from targets.sparse.bsr import block_density, bsr_matmul, scratch_shape, to_bsr
from passes.prune.sparsity import block_mask, element_mask, nm_mask, storage_bytes
from targets import get_target


def _mlp(k=64, hidden=128, n=32, rows=4):
    g = GraphBuilder(9)
    h = g.op("Relu", [g.op("Add", [g.op("MatMul", ["input", g.weight((k, hidden))]), g.weight((hidden,))])])
    out = g.op("Add", [g.op("MatMul", [h, g.weight((hidden, n))]), g.weight((n,))])
    return g.model({"input": (rows, k)}, out, (rows, n)), (rows, k)


def test_nm_mask_keeps_n_largest_of_every_m():
    w = np.random.default_rng(0).standard_normal((16, 8))
    mask = nm_mask(w, 2, 4)
    assert (mask.reshape(4, 4, 8).sum(axis=1) == 2).all()
    mag, keep = np.abs(w).reshape(4, 4, 8), mask.reshape(4, 4, 8)
    kept = np.where(keep, mag, np.inf).min(axis=1)
    dropped = np.where(~keep, mag, -np.inf).max(axis=1)
    assert (kept >= dropped).all()


@pytest.mark.parametrize("block", [(1, 16), (2, 32), (4, 4), (2, 8)])
def test_block_mask_and_bsr_kernel(block):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    w *= block_mask(w, block, 0.75)
    assert block_density(w, block) == pytest.approx(0.25)
    data, indices, indptr = to_bsr(w, block)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    lib = tvm.compile(bsr_matmul(3, 64, 64, len(indices), block), tvm.target.Target({"kind": "llvm"}))
    scratch = [np.zeros(shape, np.float32)] if (shape := scratch_shape(3, 64, block)) else []
    args = [tvm.runtime.tensor(a) for a in (x, data, indices, indptr, *scratch, np.zeros((3, 64), np.float32))]
    lib["main"](*args)
    assert_close_to_scale(args[-1].numpy(), x @ w, rtol=1e-5)


def test_element_mask_saves_storage_only():
    w = np.random.default_rng(2).standard_normal((32, 32)).astype(np.float32)
    masked = w * element_mask(w, 0.75)
    assert (masked == 0).mean() == pytest.approx(0.75)
    assert storage_bytes(masked, "element") < 0.6 * w.nbytes
    assert storage_bytes(masked, "nm", m=4) < w.nbytes


def test_compile_block_sparse_runs_bsr_and_matches_the_masked_model(tmp_path):
    model, shape = _mlp()
    config = PruneConfig("block", 0.8, block=(1, 16))
    result = prune_model(model, config)
    rows = [r for r in result.summary["layers"] if "sparsity" in r]
    assert [r["sparsity"] for r in rows] == [pytest.approx(0.8, abs=0.01)] * 2
    art = compiler.compile(model, prune=config)
    assert not [r for r in art.manifest.summary["layers"] if r["op"] == "matmul"]   # both run as BSR
    x = {"input": np.random.default_rng(3).standard_normal(shape).astype(np.float32)}
    out = next(iter(compiler.load(art.save(tmp_path / "b.tar")).run(x).values()))
    assert_close_to_scale(out, run_ort(result.onnx, x)[0], rtol=1e-5)


def test_block_sparse_and_int8_in_one_compile(tmp_path):
    """prune="block" with quantize: the dense layer runs as BSR, the 3×3 conv in the int8 kernel,
    and the outputs match ONNX Runtime on the pruned float model within quantization error."""
    g = GraphBuilder(12)
    h = g.op("Flatten", [g.op("Relu", [g.conv("input", 4, 8, k=3)])])
    out = g.op("Add", [g.op("MatMul", [h, g.weight((512, 64), scale=0.05)]), g.weight((64,))])
    model = g.model({"input": (2, 4, 8, 8)}, out, (2, 64))
    config = PruneConfig("block", 0.8, block=(1, 16))
    calib = {"input": np.random.default_rng(0).standard_normal((32, 4, 8, 8)).astype(np.float32)}
    art = compiler.compile(model, prune=config, quantize=compiler.QuantConfig("int8", calibration=calib))
    kinds = sorted(k["kernel"] for k in art.manifest.summary["kernels"].values())
    assert "sparse bsr 1x16" in kinds, kinds
    if get_target("x86").integer_ops:
        assert "int8 conv2d" in kinds, kinds
    x = {"input": np.random.default_rng(3).standard_normal((2, 4, 8, 8)).astype(np.float32)}
    got = next(iter(compiler.load(art.save(tmp_path / "b8.tar")).run(x).values()))
    want = run_ort(prune_model(model, config).onnx, x)[0]
    assert_close_to_scale(got, want, rtol=0.05)
    assert not np.allclose(got, want, rtol=0, atol=1e-5)   # the conv did run quantized


def test_block_sparse_pass_converts_only_sparse_weights():
    from compiler.frontend import import_onnx
    from compiler.pipeline import PassSpec, Recipe, run_passes

    model, _ = _mlp()
    sparse = prune_model(model, PruneConfig("block", 0.8)).onnx
    for proto, expected in ((model, 0), (sparse, 2)):
        program = run_passes(import_onnx(proto), Recipe.cleanups() + Recipe([PassSpec("block_sparse")]))
        kernels = [gv for gv, f in program.mod.functions_items() if f.attrs and "squeeze.sparse" in f.attrs]
        assert len(kernels) == expected


def test_nm_prune_exports_the_pattern(tmp_path):
    model, _ = _mlp()
    result = prune_model(model, PruneConfig("nm", nm=(2, 4)))
    onnx.save(result.onnx, tmp_path / "nm.onnx")
    weights = [onnx.numpy_helper.to_array(t) for t in result.onnx.graph.initializer if t.dims and len(t.dims) == 2]
    for w in weights:
        assert ((w.reshape(-1, 4, w.shape[1]) != 0).sum(axis=1) <= 2).all()
    assert result.summary["sparse_bytes"] < 0.7 * result.summary["dense_bytes"]


def test_block_sparse_pointwise_convs(tmp_path):
    g = GraphBuilder(10)
    x = g.op("Relu", [g.conv("input", 16, 32, k=1)])
    x = g.op("Relu", [g.conv(x, 32, 32, k=1, stride=2)])
    out = g.conv(x, 32, 16, k=3)                                  # 3×3: stays dense
    model = g.model({"input": (1, 16, 8, 8)}, out, (1, 16, 4, 4))
    config = PruneConfig("block", 0.75, block=(4, 4))
    art = compiler.compile(model, prune=config)
    assert [r["op"] for r in art.manifest.summary["layers"] if r["op"] == "conv2d"] == ["conv2d"]
    x = {"input": np.random.default_rng(4).standard_normal((1, 16, 8, 8)).astype(np.float32)}
    out = next(iter(compiler.load(art.save(tmp_path / "c.tar")).run(x).values()))
    assert_close_to_scale(out, run_ort(prune_model(model, config).onnx, x)[0], rtol=1e-5)
