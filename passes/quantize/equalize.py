"""Cross-layer equalization (Nagel et al., 2019, "Data-Free Quantization").

For a conv → [bias] → [relu | clip(0, c)] → conv chain whose middle tensor has no other
use, output channel ``i`` of the first conv is divided by ``s_i`` and input channel ``i`` of
the second multiplied by ``s_i``, with ``s_i = sqrt(r1_i / r2_i)`` (``r`` = per-channel weight
ranges), so both ranges become ``sqrt(r1_i · r2_i)``. ReLU is positively homogeneous, so the
function is unchanged; ``clip(0, c)`` (ReLU6) becomes ``minimum(relu(x), c / s)`` per channel,
which quantization fuses as the layer's activation. Per-tensor weight quantization (depthwise
layers above all) gains the most.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from compiler.ir import bindings, op_name, rebind, single_consumer, use_counts

from ..registry import register_pass

Const = tvm.ir.expr.Constant
# A channel whose weight range is below DEAD x its layer's largest is left unscaled: such nearly
# dead channels (e.g. ~1e-9 after BatchNorm folding) gave scales of 1e10 and int32-overflowing biases.
DEAD = 1e-6


def _pairs(func: relax.Function) -> list[dict]:
    """Equalizable chains: the bindings of conv1, its bias add, its activation and conv2."""
    uses, consumer = use_counts(func)
    chains = []
    for b in bindings(func):
        if op_name(b.value) != "relax.nn.conv2d" or not isinstance(b.value.args[1], Const):
            continue
        chain, last = {"conv1": b}, b
        add = single_consumer(last.var, uses, consumer, ("relax.add",))
        if add is not None and add.value.args[0].same_as(last.var) and isinstance(add.value.args[1], Const):
            chain["bias"], last = add, add
        act = single_consumer(last.var, uses, consumer, ("relax.nn.relu", "relax.clip"))
        if act is not None:
            if op_name(act.value) == "relax.clip" and float(act.value.args[1].value) != 0.0:
                continue
            chain["act"], last = act, act
        conv2 = single_consumer(last.var, uses, consumer, ("relax.nn.conv2d",))
        if conv2 is None or not isinstance(conv2.value.args[1], Const) or not conv2.value.args[0].same_as(last.var):
            continue
        channels = int(b.var.ty.shape[1])
        groups = int(conv2.value.attrs.groups)
        if groups not in (1, channels):
            continue
        chain["conv2"] = conv2
        chains.append(chain)
    return chains


def _equalize_chain(chain: dict, values: dict) -> None:
    """Rescale one chain in place of ``values`` (``{var: new expr}``, latest weights win)."""
    def current(binding):
        return values.get(binding.var, binding.value)

    conv1, conv2 = current(chain["conv1"]), current(chain["conv2"])
    w1, w2 = conv1.args[1].value.numpy(), conv2.args[1].value.numpy()
    depthwise = int(conv2.attrs.groups) > 1
    r1 = np.abs(w1).max(axis=(1, 2, 3))
    r2 = np.abs(w2).max(axis=(1, 2, 3)) if depthwise else np.abs(w2).max(axis=(0, 2, 3))
    live = (r1 > DEAD * r1.max(initial=0.0)) & (r2 > DEAD * r2.max(initial=0.0))
    s = np.where(live, np.sqrt(r1 / np.where(live, r2, 1.0)), 1.0).astype(np.float32)
    values[chain["conv1"].var] = relax.Call(conv1.op, [conv1.args[0], relax.const(w1 / s[:, None, None, None])],
                                            conv1.attrs, conv1.ty_args)
    w2_scale = s[:, None, None, None] if depthwise else s[None, :, None, None]
    values[chain["conv2"].var] = relax.Call(conv2.op, [conv2.args[0], relax.const(w2 * w2_scale)],
                                            conv2.attrs, conv2.ty_args)
    if "bias" in chain:
        add = current(chain["bias"])
        bias = add.args[1].value.numpy()
        values[chain["bias"].var] = relax.op.add(add.args[0], relax.const(bias / s.reshape(bias.shape)))
    if "act" in chain and op_name(current(chain["act"])) == "relax.clip":
        clip = chain["act"].value
        cap = float(clip.args[2].value) / s.reshape(1, -1, 1, 1)
        values[chain["act"].var] = relax.op.minimum(relax.op.nn.relu(clip.args[0]), relax.const(cap))
    elif "act" in chain and op_name(current(chain["act"])) == "relax.minimum":
        capped = current(chain["act"])
        cap = capped.args[1].value.numpy() / s.reshape(1, -1, 1, 1)
        values[chain["act"].var] = relax.op.minimum(capped.args[0], relax.const(cap.astype(np.float32)))


@register_pass("equalize")
def equalize(iterations: int = 4) -> tvm.transform.Pass:
    """Cross-layer equalization of consecutive conv layers (see module docstring).

    Parameters
    ----------
    iterations : int
        Sweeps over all chains; chains share layers (expand → depthwise → project), so the
        scales converge over a few sweeps.

    Returns
    -------
    tvm.transform.Pass
        A function pass over Relax functions (weights bound as constants).
    """

    @relax.transform.function_pass(opt_level=0, name="equalize")
    def transform(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        chains = _pairs(func)
        values: dict = {}
        for _ in range(iterations):
            for chain in chains:
                _equalize_chain(chain, values)
        return rebind(func, values) if values else func

    return transform
