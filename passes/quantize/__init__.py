"""Post-training quantization into the integer IR: the pure ``realize`` pass.

Calibration runs the model on data, so it is a driver step (``compiler.calibration``): it
observes the float tensors on the host and hands their ranges to :func:`realize`, which
rewrites the IR and nothing else.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import tvm
from tvm import relax

from compiler.errors import SqueezeError
from compiler.frontend import layer_calls
from compiler.ir import layer_kind, layer_names, replace_main

from ..registry import register_pass, user_errors
from . import equalize as _equalize  # noqa: F401  (registers "equalize")
from . import qdq_to_integer as _qdq  # noqa: F401  (registers "qdq_to_integer")
from .realize import realize_function
from .schemes import Scheme, parse_scheme


def _op(kind: str) -> str:
    """The op a layer kind belongs to: every conv kind is ``conv2d``."""
    return "conv2d" if kind.endswith("conv2d") else kind


def layer_ids(func: relax.Function) -> list[set[str]]:
    """The names each conv/matmul layer of ``func`` answers to, in order: ``conv2d_N`` /
    ``matmul_N`` and its ONNX node name when known."""
    names = layer_names(func)
    ids = []
    for index, binding in enumerate(layer_calls(func)):
        kind = layer_kind(binding.value)
        ids.append({f"{_op(kind)}_{index}", *names[index:index + 1]})
    return ids


def layer_filter(skip: Sequence[str], skip_ops: Sequence[str], keep_first_last: bool, func: relax.Function,
                 ops: frozenset[str] | None = None):
    """``(index, call) -> reason`` deciding which conv/matmul layers of ``func`` stay float.

    ``ops`` are the layer kinds (``compiler.ir.layer_kind``) the target runs in integers
    (None: all); ``skip_ops`` may name a kind or the op (``conv2d`` covers every conv).
    """
    skip, ids = set(skip), layer_ids(func)

    def keep_float(index: int, call: relax.Call) -> str:
        kind = layer_kind(call)
        op = _op(kind)
        if ids[index] & skip:
            return "skipped by name"
        if op in skip_ops or kind in skip_ops:
            return f"skipped op type {kind}"
        if ops is not None and kind not in ops:
            return f"{kind} has no integer kernel on the target"
        if keep_first_last and index in (0, len(ids) - 1):
            return "first/last layer kept float"
        return ""

    return keep_float


def layer_scheme_map(func: relax.Function, layer_schemes: Mapping[str, str | Scheme] | None,
                     base: Scheme) -> dict[int, Scheme]:
    """``{layer index: Scheme}`` of ``layer_schemes`` (``{"conv2d_3": "int4", ONNX node name: scheme}``):
    the layers quantized otherwise than ``base``. Their activations must be ``base``'s (the codes
    a layer writes are what its consumers read); unknown names are errors naming the layers."""
    ids, out = layer_ids(func), {}
    for name, scheme in (layer_schemes or {}).items():
        parsed = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
        index = next((i for i, names in enumerate(ids) if name in names), None)
        if index is None:
            shown = ", ".join(sorted(ids[0])) if ids else "none"
            raise SqueezeError(f"layer_schemes names a layer that is not in the model: {name!r}: use conv2d_N / "
                               f"matmul_N or ONNX node names (e.g. {shown}; `squeeze inspect MODEL` lists them)")
        if parsed.activations != base.activations or parsed.integer_only != base.integer_only:
            raise SqueezeError(f"layer_schemes[{name!r}] = {parsed.name} changes the activations of {base.name}: "
                               "a layer's own scheme may change its weights only (keep a layer float with skip)")
        out[index] = parsed
    return out


@register_pass("realize")
def realize(
    scheme: str | Scheme = "int8",
    ranges: dict | None = None,
    means: dict | None = None,
    observer: str = "minmax",
    skip: Sequence[str] = (),
    skip_ops: Sequence[str] = (),
    keep_first_last: bool = False,
    ops: Sequence[str] | None = None,
    layer_schemes: Mapping[str, str] | None = None,
    weights: dict | None = None,
    shifts: dict | None = None,
) -> tvm.transform.Pass:
    """Rewrite ``main`` into the integer IR with calibrated activation ranges.

    Parameters
    ----------
    scheme : str or Scheme
        Scheme name or alias (``int8`` = ``w8_sym_per_channel__a8_asym_per_tensor``).
    ranges : dict
        ``{var of main: (lo, hi)}`` activation ranges (``compiler.calibration``).
    means : dict, optional
        Per-channel means of the same vars: turns on bias correction, subtracting the
        expected output shift of weight rounding, ``(W_q - W) · E[x]`` (Nagel et al., 2019).
    observer : str
        The observer the ranges came from (recorded only).
    skip, skip_ops : sequence of str
        Layers (``conv2d_3`` or ONNX node names) and op types (``conv2d``, ``depthwise_conv2d``,
        ``matmul``) kept float.
    keep_first_last : bool
        Keep the first and last conv/matmul layers float.
    ops : sequence of str, optional
        Layer kinds the target runs in integers (``TargetSpec.integer_ops``); others stay float.
    layer_schemes : dict, optional
        ``{layer: scheme}``: layers (``conv2d_3`` or ONNX node names) whose weights use another
        scheme than ``scheme``, e.g. ``{"conv2d_3": "int4"}`` (mixed precision; see :func:`layer_scheme_map`).
    weights, shifts : dict, optional
        ``{layer var: (codes, per-channel scales)}`` replacing a layer's nearest rounding
        (AdaRound, weight range search) and ``{layer var: per-channel shift}`` subtracted from its bias (per-layer bias
        correction), as :func:`passes.quantize.reconstruct.refine` gives them.

    Returns
    -------
    tvm.transform.Pass
        A module pass rewriting ``main`` (other functions kept); per-layer decisions go to
        its ``squeeze.quantized`` attr.
    """
    scheme = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
    if ranges is None:
        raise SqueezeError("realize needs calibrated ranges: quantize through compiler.compile or the "
                           "'quantize' recipe step, which calibrates first")
    kinds = frozenset(ops) if ops is not None else None

    @tvm.transform.module_pass(opt_level=0, name="realize")
    @user_errors
    def transform(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        keep = layer_filter(skip, skip_ops, keep_first_last, mod["main"], kinds)
        return realize_module(mod, scheme, ranges, keep, means, observer,
                              layer_scheme_map(mod["main"], layer_schemes, scheme), weights, shifts)

    return transform


def realize_module(mod: tvm.IRModule, scheme: Scheme, ranges: dict, keep, means: dict | None,
                   observer: str, layer_schemes: dict[int, Scheme] | None = None, weights: dict | None = None,
                   shifts: dict | None = None) -> tvm.IRModule:
    """``mod`` with ``main`` realized in the integer IR (every other function kept), decisions
    in ``squeeze.quantized``; ``layer_schemes``: layer index -> its own scheme."""
    new, records = realize_function(mod["main"], scheme, ranges, keep, means, layer_schemes, weights, shifts)
    new = new.with_attr("squeeze.quantized", json.dumps({"scheme": scheme.name, "observer": observer,
                                                          "layers": records}))
    return replace_main(mod, new)
