"""Requantization in compiled Relax is bit-exact against the numpy integer reference."""
import numpy as np
import pytest
import tvm
from tvm import relax

from passes.quantize.requantize import Requant, requantize, requantize_reference
from passes.quantize.schemes import fixed_point_multiplier


def _compile_requant(shape, rq, axis):
    x = relax.Var("acc", relax.TensorType(shape, "int32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(requantize(x, rq, len(shape), axis))
        bb.emit_func_output(out)
    vm = relax.VirtualMachine(tvm.compile(bb.get(), tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return lambda a: vm["main"](tvm.runtime.tensor(a)).numpy()


@pytest.mark.parametrize("integer_only", [False, True], ids=["float", "fixed_point"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_requantize_bit_exact(integer_only, per_channel):
    rng = np.random.default_rng(0)
    shape, axis = (2, 8, 5, 5), 1
    mult = rng.uniform(1e-4, 0.9, 8 if per_channel else 1)
    rq = Requant(mult, zero=7, lo=0, hi=255, out_dtype="uint8", integer_only=integer_only)
    acc = rng.integers(-2**20, 2**20, shape).astype(np.int32)
    # exact ties exercise the rounding rule
    acc.reshape(-1)[:8] = np.round(0.5 / mult[0]).astype(np.int32)
    out = _compile_requant(shape, rq, axis)(acc)
    np.testing.assert_array_equal(out, requantize_reference(acc, rq, axis))


def test_fixed_point_multiplier_accuracy():
    m = np.array([1e-6, 3.7e-3, 0.25, 0.4999999, 0.9999999999])
    m0, n = fixed_point_multiplier(m)
    assert np.all((m0 >= 2**30) & (m0 < 2**31))
    np.testing.assert_allclose(m0 * 2.0 ** -n.astype(float), m, rtol=2**-30)


def test_fixed_point_rounds_half_up_like_reference():
    rq = Requant(np.array([0.5]), zero=0, lo=-128, hi=127, out_dtype="int8", integer_only=True)
    acc = np.array([[1, 3, -1, -3, 5]], np.int32)
    np.testing.assert_array_equal(requantize_reference(acc, rq, 1), [[1, 2, 0, -1, 3]])
