"""The N:M kernel and the nm_sparse pass: exact against numpy, used only where it is faster."""
import numpy as np
import pytest
import tvm
from graphs import GraphBuilder, assert_close_to_scale, run_ort

import compiler
from passes.prune import PruneConfig, prune_model
from targets.sparse.nm import is_nm, nm_matmul, to_nm
from passes.prune.sparsity import nm_mask
from targets import get_target


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


def test_compile_nm_runs_the_kernel_on_one_row(tmp_path):
    model = _dense(rows=1)
    config = PruneConfig("nm", nm=(2, 4))
    art = compiler.compile(model, prune=config, target="x86")
    used = [k for k in art.manifest.summary["kernels"].values() if k["kernel"] == "sparse nm 2:4"]
    assert len(used) == ("nm" in get_target("x86").sparse)
    x = {"input": np.random.default_rng(5).standard_normal((1, 64)).astype(np.float32)}
    out = next(iter(compiler.load(art.save(tmp_path / "nm.tar")).run(x).values()))
    assert_close_to_scale(out, run_ort(prune_model(model, config).onnx, x)[0], rtol=1e-5)


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
