"""Weights leave the library as parameters, each distinct value once."""
import numpy as np
from tvm import relax

from compiler.build import lift_weights


def _two_steps(second_copy_differs: bool):
    """Two matmuls with the same weight value, as two constant objects (an unrolled RNN's steps)."""
    w = np.random.default_rng(0).standard_normal((32, 32)).astype("float32")
    other = w + 1 if second_copy_differs else w.copy()
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 32), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.matmul(x, relax.const(w)))
            out = bb.emit_output(bb.emit(relax.op.matmul(h, relax.const(other))))
        bb.emit_func_output(out)
    return bb.get(), w, other


def test_equal_constants_become_one_parameter():
    mod, w, _ = _two_steps(second_copy_differs=False)
    lifted, values = lift_weights(mod, min_bytes=1024)
    assert len(values) == 1 and len(lifted["main"].params) == 2
    np.testing.assert_array_equal(values[0], w)


def test_different_constants_stay_apart():
    mod, w, other = _two_steps(second_copy_differs=True)
    _, values = lift_weights(mod, min_bytes=1024)
    assert len(values) == 2
    np.testing.assert_array_equal(values[1], other)


def test_small_constants_stay_in_the_library():
    mod, _, _ = _two_steps(second_copy_differs=False)
    lifted, values = lift_weights(mod, min_bytes=1 << 20)
    assert values == [] and len(lifted["main"].params) == 1
