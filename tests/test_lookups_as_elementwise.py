"""An 8-bit lookup table fuses into the kernel that computes its codes; other gathers do not."""
import numpy as np
import pytest
import tvm
from tvm import relax

from compiler.build import lookups_as_elementwise


def _codes_then_take(entries: int) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 4, 4), "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            codes = bb.emit(relax.op.clip(relax.op.add(x, relax.const(np.int32(1))), 0, entries - 1))
            table = relax.const((np.arange(entries) % 256).astype("uint8"))
            out = bb.emit_output(bb.emit(relax.op.take(table, codes, axis=0)))
        bb.emit_func_output(out)
    return relax.transform.AnnotateTIROpPattern()(relax.transform.LegalizeOps()(bb.get()))


@pytest.mark.parametrize("entries,fused", [(256, True), (1024, False)])
def test_take_from_a_small_table_fuses(entries, fused):
    mod = relax.transform.FuseOps()(lookups_as_elementwise()(_codes_then_take(entries)))
    groups = [g.name_hint for g, f in mod.functions.items() if isinstance(f, relax.Function) and g.name_hint != "main"]
    assert any("take" in g for g in groups) == fused, groups
    x = np.random.default_rng(0).integers(-5, 300, (1, 8, 4, 4)).astype("int32")
    built = tvm.compile(relax.transform.FuseTIR()(mod), "llvm")
    got = relax.VirtualMachine(built, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, (np.clip(x + 1, 0, entries - 1) % 256).astype("uint8"))
