"""Float sigmoid becomes 1 / (1 + exp(-x)) on the fast exponential, to float32 precision."""
import numpy as np
import tvm
from tvm import relax

from graphs import built_for

import targets
from targets.schedules.fast_sigmoid import sigmoid_as_exp


def _silu(n: int) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n,), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.multiply(x, relax.op.sigmoid(x))))
        bb.emit_func_output(out)
    return bb.get()


def _ops(mod: tvm.IRModule) -> set[str]:
    ops = set()
    relax.analysis.post_order_visit(mod["main"], lambda e: ops.add(e.op.name) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) else None)
    return ops


def test_sigmoid_rewritten_on_exp():
    ops = _ops(sigmoid_as_exp()(_silu(8)))
    assert "relax.sigmoid" not in ops and "relax.exp" in ops


def test_cpu_target_silu_matches_float64_over_the_whole_range():
    """From saturation at -100 through 0 to +100: relative error within a few float32 ulps,
    limits 0 and 1 kept (no inf or NaN from the clamped exponential)."""
    x = np.concatenate([np.linspace(-100, 100, 4001), [-1e30, 1e30, 0.0]]).astype("float32")
    names, vm = built_for(_silu(len(x)), targets.get_target("x86"))
    assert not any("sigmoid" in n for n in names) and any("fast_exp" in n for n in names), names
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    x64 = x.astype(np.float64)
    want = x64 * np.exp(-np.logaddexp(0, -x64))  # x * sigmoid(x) without overflow
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)
