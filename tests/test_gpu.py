"""CUDA: a thread-bound float32 matmul built for sm_80 runs on the GPU and matches numpy.

Deselected by default (``-m "not slow and not gpu"``); skips where no CUDA device is present.
"""
import numpy as np
import pytest
import tvm
from tvm import te

CUDA_TARGET = {"kind": "cuda", "arch": "sm_80", "host": {"kind": "llvm"}}


def _matmul(m: int, k: int, n: int, tile: int = 16) -> tvm.IRModule:
    """``C = A @ B`` with one thread per output element, ``tile × tile`` threads per block."""
    a = te.placeholder((m, k), "float32", name="A")
    b = te.placeholder((k, n), "float32", name="B")
    r = te.reduce_axis((0, k), name="r")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, r] * b[r, j], axis=r), name="C")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, b, c]))
    i, j, _ = sch.get_loops(sch.get_sblock("C"))
    bi, ti = sch.split(i, [None, tile])
    bj, tj = sch.split(j, [None, tile])
    sch.reorder(bi, bj, ti, tj)
    for loop, axis in ((bi, "blockIdx.y"), (bj, "blockIdx.x"), (ti, "threadIdx.y"), (tj, "threadIdx.x")):
        sch.bind(loop, axis)
    return sch.mod


@pytest.mark.gpu
def test_cuda_matmul_128x96x64_matches_numpy():
    dev = tvm.cuda(0)
    if not dev.exist:
        pytest.skip("no CUDA device (tvm.cuda(0).exist is false)")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((128, 96)).astype(np.float32)
    b = rng.standard_normal((96, 64)).astype(np.float32)
    lib = tvm.compile(_matmul(128, 96, 64), tvm.target.Target(CUDA_TARGET))
    args = [tvm.runtime.tensor(x, dev) for x in (a, b, np.zeros((128, 64), np.float32))]
    lib["main"](*args)
    dev.sync()
    np.testing.assert_allclose(args[-1].numpy(), a @ b, rtol=1e-4, atol=1e-4)
