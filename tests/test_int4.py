"""int4 / int2 weights × uint8 activations on x86: sub-byte weights unpacked in registers feeding ``vpdpbusd``.

Layers whose weight codes fit 4 (2) bits run on ``vnni_w4`` (``vnni_w2``): weights two (four) per
byte as ``w + 8`` (``w + 2``), the legalization subtracting ``8 · Σ x`` (``2 · Σ x``); the
expected codes are ``quant_utils``' numpy references.
"""
import numpy as np
import pytest
import tvm
from tvm import relax

from compiler.build import build, lower
from compiler.profile import kernel_table
from passes.quantize.realize import QOutput
from quant_utils import U8, conv_layer, matmul_layer, needs_host
from targets import get_target

OUT = QOutput(scale=0.05, zero=3, lo=-128, hi=127, dtype="int8")
CONV_CASES = [  # (N, C, H, W, O, k, stride, pad, dilation, groups)
    (1, 32, 9, 9, 24, 3, 1, 1, 1, 1),
    (1, 3, 16, 16, 16, 7, 2, 3, 1, 1),   # stem: kernel columns folded into the reduction
    (2, 20, 7, 7, 40, 3, 2, 1, 2, 2),    # grouped, dilated, batch 2, channels not multiples of 8
]
pytestmark = needs_host("x86-vnni")


def _kernels(program) -> dict:
    return kernel_table(lower(program, get_target("x86")))


def _run(program, x):
    vm = relax.VirtualMachine(build(program, get_target("x86")), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


BITS = [pytest.param((-8, 8), "vnni_w4", id="int4"), pytest.param((-2, 2), "vnni_w2", id="int2")]


@pytest.mark.parametrize("w_range,isa", BITS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "n{}c{}h{}w{}o{}k{}s{}p{}d{}g{}".format(*c))
def test_sub_byte_conv_bit_exact(case, w_range, isa):
    program, x, want = conv_layer(case, U8, 5, OUT, fixed=False, seed=sum(case), w_range=w_range)
    names = [n for n, k in _kernels(program).items() if k["kernel"] == "int8 conv2d"]
    assert names and all(isa in n for n in names), names
    np.testing.assert_array_equal(_run(program, x), want)


@pytest.mark.parametrize("w_range,isa", BITS)
@pytest.mark.parametrize("shape,n_out", [((1, 4096), 64), ((3, 100), 40), ((2, 5, 72), 24)], ids=str)
def test_sub_byte_matmul_bit_exact(shape, n_out, w_range, isa):
    program, x, want = matmul_layer(shape, n_out, U8, 0, OUT, fixed=False, seed=n_out,
                                    w_values=np.arange(*w_range))
    table = _kernels(program)
    name = next(n for n, k in table.items() if k["kernel"] == "int8 matmul")
    assert isa in name, table
    bits, k = int(isa[-1]), -(-shape[-1] // 64) * 64  # K padded to whole groups
    assert table[name]["weight_bytes"] <= k * n_out * bits // 8 + 16 * n_out, table[name]  # + bias, multipliers
    np.testing.assert_array_equal(_run(program, x), want)


def test_eight_bit_weights_stay_on_vnni():
    program, _, _ = matmul_layer((1, 64), 32, U8, 0, OUT, fixed=False, seed=1, w_values=(-9, 7))
    names = [n for n, k in _kernels(program).items() if k["kernel"] == "int8 matmul"]
    assert names and not any("vnni_w4" in n for n in names), names
