"""Softmax over an inner axis runs over the last one between transposes, with equal results."""
import numpy as np
import pytest
import tvm
from tvm import relax

from graphs import built_for

import targets
from targets.schedules.softmax_axis import softmax_over_last_axis

SHAPE = (1, 16, 4, 30)


def _softmax(axis: int, log: bool = False) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(SHAPE, "float32"))
    op = relax.op.nn.log_softmax if log else relax.op.nn.softmax
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(op(x, axis=axis)))
        bb.emit_func_output(out)
    return bb.get()


def _reference(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    shifted = x.astype(np.float64) - x.max(axis=axis, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return log_p if log else np.exp(log_p)


def _softmax_axes(mod: tvm.IRModule) -> list[int]:
    axes = []
    relax.analysis.post_order_visit(mod["main"], lambda e: axes.append(int(e.attrs.axis))
                                    if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op)
                                    and e.op.name in ("relax.nn.softmax", "relax.nn.log_softmax") else None)
    return axes


@pytest.mark.parametrize("axis,log", [(1, False), (2, True), (-3, False)])
def test_inner_axis_moves_last(axis, log):
    mod = softmax_over_last_axis()(_softmax(axis, log))
    assert _softmax_axes(mod) == [-1]
    _, target_vm = built_for(_softmax(axis, log), targets.get_target("x86"))
    rewritten_vm = relax.VirtualMachine(tvm.compile(relax.transform.LegalizeOps()(mod), "llvm"), tvm.cpu())
    x = np.random.default_rng(0).standard_normal(SHAPE).astype("float32") * 4
    for vm in (rewritten_vm, target_vm):
        got = vm["main"](tvm.runtime.tensor(x)).numpy()
        np.testing.assert_allclose(got, _reference(x, axis, log), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [3, -1])
def test_last_axis_left(axis):
    assert _softmax_axes(softmax_over_last_axis()(_softmax(axis))) == [axis]
