"""Transposes move through 8-bit lookup tables and pads and cancel; other gathers keep theirs."""
import numpy as np
import pytest
import tvm
from tvm import relax

from compiler.build import transposes_through_lookups


def _nchw_island(entries: int) -> tvm.IRModule:
    """What ConvertLayout leaves around a lookup table between NHWC layers: NHWC → NCHW, take,
    pad, NCHW → NHWC."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 5, 6, 8), "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            nchw = bb.emit(relax.op.permute_dims(x, [0, 3, 1, 2]))
            table = relax.const((np.arange(entries) * 7 % 256).astype("uint8"))
            looked = bb.emit(relax.op.take(table, nchw, axis=0))
            padded = bb.emit(relax.op.nn.pad(looked, [0, 0, 0, 0, 1, 2, 0, 1], "constant", 9.0))
            out = bb.emit_output(bb.emit(relax.op.permute_dims(padded, [0, 2, 3, 1])))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    built = tvm.compile(relax.transform.LegalizeOps()(mod), "llvm")
    return relax.VirtualMachine(built, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _ops(mod: tvm.IRModule) -> list[str]:
    ops = []
    relax.analysis.post_order_visit(mod["main"], lambda e: ops.append(e.op.name) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) else None)
    return ops


@pytest.mark.parametrize("entries,transposes", [(256, 0), (1024, 2)])
def test_lookup_table_island_loses_its_transposes(entries, transposes):
    mod = _nchw_island(entries)
    moved = transposes_through_lookups()(mod)
    assert _ops(moved).count("relax.permute_dims") == transposes, moved
    x = np.random.default_rng(0).integers(0, entries, (1, 5, 6, 8)).astype("int32")
    want = np.pad(((x * 7) % 256).astype(np.uint8).transpose(0, 3, 1, 2), ((0, 0), (0, 0), (1, 2), (0, 1)),
                  constant_values=9).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(_run(moved, x), want)
    np.testing.assert_array_equal(_run(mod, x), want)
