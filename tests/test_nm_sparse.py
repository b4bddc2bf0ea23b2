"""The N:M kernel and the nm_sparse pass: exact against numpy, used only where it is faster
(x86 with AVX-512: ``TargetSpec.sparse``)."""
import numpy as np
import pytest
import tvm
from graphs import GraphBuilder, assert_close_to_scale, run_ort

import compiler
from passes.prune import PruneConfig, prune_model
from targets.sparse.nm import is_nm, nm_matmul, to_nm
from passes.prune.sparsity import nm_mask
from targets import get_target


NM_ON_HOST = pytest.mark.skipif("nm" not in get_target("x86").sparse,
                                reason="host lacks avx512f: x86 runs N:M weights dense there (no faster kernel)")


def _dense(rows: int, k: int = 64, n: int = 32):
    g = GraphBuilder(11)
    out = g.op("Add", [g.op("MatMul", ["input", g.weight((k, n))]), g.weight((n,))])
    return g.model({"input": (rows, k)}, out, (rows, n))


@pytest.mark.parametrize("n, m, rows", [(2, 4, 1), (1, 2, 2), (2, 8, 1), (4, 8, 3)])
def test_nm_kernel_matches_numpy(n, m, rows):
    rng = np.random.default_rng(n * 10 + m)
    w = rng.standard_normal((64, 48)).astype(np.float32)
    w *= nm_mask(w, n, m)
    w[:m, :5] = 0                                                 # groups with fewer than n non-zeros
    assert is_nm(w, n, m) and not is_nm(w, n - 1, m) if n > 1 else is_nm(w, n, m)
    values, positions = to_nm(w, n, m)
    x = rng.standard_normal((rows, 64)).astype(np.float32)
    lib = tvm.compile(nm_matmul(rows, 64, 48, n, m), tvm.target.Target({"kind": "llvm"}))
    args = [tvm.runtime.tensor(a) for a in (x, values, positions, np.zeros((rows, 48), np.float32))]
    lib["main"](*args)
    assert_close_to_scale(args[-1].numpy(), x @ w, rtol=1e-5)


@NM_ON_HOST
def test_compile_nm_runs_the_kernel_on_one_row(tmp_path):
    model = _dense(rows=1)
    config = PruneConfig("nm", nm=(2, 4))
    art = compiler.compile(model, prune=config, target="x86")
    used = [k for k in art.manifest.summary["kernels"].values() if k["kernel"] == "sparse nm 2:4"]
    assert len(used) == 1
    x = {"input": np.random.default_rng(5).standard_normal((1, 64)).astype(np.float32)}
    out = next(iter(compiler.load(art.save(tmp_path / "nm.tar")).run(x).values()))
    assert_close_to_scale(out, run_ort(prune_model(model, config).onnx, x)[0], rtol=1e-5)


@pytest.mark.parametrize("target, used", [("x86-avx512", 1), ("x86-vnni", 1), ("x86-avx2", 0), ("llvm", 0)])
def test_nm_kernel_only_where_declared(target, used):
    """Compile only (runs nowhere): AVX-512 targets use the N:M kernel, the others run it dense."""
    art = compiler.compile(_dense(rows=1), prune=PruneConfig("nm", nm=(2, 4)), target=target)
    kernels = [k for k in art.manifest.summary["kernels"].values() if k["kernel"] == "sparse nm 2:4"]
    assert len(kernels) == used == ("nm" in get_target(target).sparse)


def _conv_dense(rows: int):
    """3×3 conv (stays dense: int8 kernel) → flatten → 512×64 dense layer (sparse kernel)."""
    g = GraphBuilder(12)
    x = g.op("Flatten", [g.op("Relu", [g.conv("input", 4, 8, k=3)])])
    out = g.op("Add", [g.op("MatMul", [x, g.weight((512, 64), scale=0.05)]), g.weight((64,))])
    return g.model({"input": (rows, 4, 8, 8)}, out, (rows, 64))


@NM_ON_HOST
def test_nm_and_int8_in_one_compile(tmp_path):
    """prune="nm" with quantize: the dense layer runs the N:M kernel, the conv the int8 one, and
    the outputs match ONNX Runtime on the pruned float model within quantization error."""
    model, config = _conv_dense(rows=1), PruneConfig("nm", nm=(2, 4))
    calib = {"input": np.random.default_rng(0).standard_normal((32, 4, 8, 8)).astype(np.float32)}
    art = compiler.compile(model, prune=config, quantize=compiler.QuantConfig("int8", calibration=calib))
    kinds = sorted(k["kernel"] for k in art.manifest.summary["kernels"].values())
    assert "sparse nm 2:4" in kinds and "int8 conv2d" in kinds, kinds
    x = {"input": np.random.default_rng(3).standard_normal((1, 4, 8, 8)).astype(np.float32)}
    out = next(iter(compiler.load(art.save(tmp_path / "nm8.tar")).run(x).values()))
    want = run_ort(prune_model(model, config).onnx, x)[0]
    assert_close_to_scale(out, want, rtol=0.05)
    assert not np.allclose(out, want, rtol=0, atol=1e-5)   # the conv did run in int8


def test_nm_sparse_pass_leaves_many_rows_and_dense_weights_dense():
    from compiler.frontend import import_onnx
    from compiler.pipeline import PassSpec, Recipe, run_passes

    one_row, many_rows = _dense(rows=1), _dense(rows=8)
    cases = ((one_row, False, 0), (one_row, True, 1), (many_rows, True, 0))
    for model, pruned, expected in cases:
        proto = prune_model(model, PruneConfig("nm", nm=(2, 4))).onnx if pruned else model
        program = run_passes(import_onnx(proto), Recipe.cleanups() + Recipe([PassSpec("nm_sparse")]))
        kernels = [gv for gv, f in program.mod.functions_items() if f.attrs and "squeeze.sparse" in f.attrs]
        assert len(kernels) == expected


def test_nm_sparse_rejects_bad_patterns():
    from targets.sparse.nm import nm_sparse

    with pytest.raises(ValueError, match="N:M"):
        nm_sparse((3, 2))
