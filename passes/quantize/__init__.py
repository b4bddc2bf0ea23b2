"""Post-training quantization into the integer IR: calibrate, then realize."""
from __future__ import annotations

import json
from typing import Sequence

import tvm
from tvm import relax

from compiler.errors import SqueezeError
from compiler.frontend import layer_calls
from compiler.ir import layer_names, user_inputs
from compiler.program import TensorSpec

from ..registry import register_pass, user_errors
from .calibrate import CalibrationSource, calibrate_module
from .observers import make_observer
from . import equalize as _equalize  # noqa: F401  (registers "equalize")
from . import qdq_to_integer as _qdq  # noqa: F401  (registers "qdq_to_integer")
from .realize import realize_function
from .schemes import Scheme, parse_scheme


def _input_specs(func: relax.Function) -> list[TensorSpec]:
    return [TensorSpec(p.name, tuple(int(d) for d in p.ty.shape), str(p.ty.dtype)) for p in user_inputs(func)]


def layer_filter(skip: Sequence[str], skip_ops: Sequence[str], keep_first_last: bool, num_layers: int,
                 names: Sequence[str] = ()):
    """``(index, op) -> reason`` deciding which conv/matmul layers stay float."""
    skip = set(skip)

    def keep_float(index: int, op: str) -> str:
        own = {f"{op}_{index}", *(names[index:index + 1] if index < len(names) else [])}
        if own & skip:
            return "skipped by name"
        if op in skip_ops:
            return f"skipped op type {op}"
        if keep_first_last and index in (0, num_layers - 1):
            return "first/last layer kept float"
        return ""

    return keep_float


@register_pass("quantize")
def quantize(
    scheme: str | Scheme = "int8",
    calibration: CalibrationSource | None = None,
    observer: str = "minmax",
    skip: Sequence[str] = (),
    skip_ops: Sequence[str] = (),
    keep_first_last: bool = False,
    bias_correction: bool = False,
    progress: bool = True,
) -> tvm.transform.Pass:
    """Post-training quantization: calibrate on ``calibration``, then realize the integer IR.

    Parameters
    ----------
    scheme : str or Scheme
        Scheme name or alias (``int8`` = ``w8_sym_per_channel__a8_asym_per_tensor``).
    calibration : path, ImageFolder, dict or iterable
        Calibration inputs (see :func:`passes.quantize.calibrate.load_calibration`).
    observer : str
        ``minmax``, ``moving_average``, ``percentile``, ``entropy`` or ``mse``.
    skip, skip_ops : sequence of str
        Layers (``conv2d_3`` or ONNX node names) and op types (``conv2d``, ``matmul``) kept float.
    keep_first_last : bool
        Keep the first and last conv/matmul layers float.
    bias_correction : bool
        Subtract the expected output shift caused by weight rounding, ``(W_q - W) · E[x]``,
        with ``E[x]`` measured during calibration (Nagel et al., 2019).

    Returns
    -------
    tvm.transform.Pass
        A module pass rewriting ``main``; per-layer decisions go to its ``squeeze.quantized`` attr.
    """
    scheme = scheme if isinstance(scheme, Scheme) else parse_scheme(scheme)
    if calibration is None:
        raise SqueezeError("quantization needs calibration data: pass --calib data.npz (or a folder of images)")

    try:
        make_observer(observer)  # fail on a bad name before any work
    except ValueError as err:
        raise SqueezeError(str(err)) from None

    @tvm.transform.module_pass(opt_level=0, name="quantize")
    @user_errors
    def transform(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod["main"]
        ranges, means = calibrated_ranges(mod, scheme, calibration, observer, progress)
        keep = layer_filter(skip, skip_ops, keep_first_last, len(layer_calls(func)), layer_names(func))
        return realize_module(mod, scheme, ranges, keep, means if bias_correction else None, observer)

    return transform


def calibrated_ranges(mod: tvm.IRModule, scheme: Scheme, calibration: CalibrationSource, observer: str,
                      progress: bool) -> tuple[dict, dict]:
    """Calibrated activation ranges for ``scheme`` and per-channel means, keyed by ``main``'s vars."""
    observers, means = calibrate_module(mod, _input_specs(mod["main"]), calibration, observer, progress)
    acts = scheme.activations
    return {v: obs.range(acts.symmetric, acts.bits, acts.unsigned) for v, obs in observers.items()}, means


def realize_module(mod: tvm.IRModule, scheme: Scheme, ranges: dict, keep, means: dict | None,
                   observer: str) -> tvm.IRModule:
    """``mod`` with ``main`` realized in the integer IR, decisions in ``squeeze.quantized``."""
    new, records = realize_function(mod["main"], scheme, ranges, keep, means)
    new = new.with_attr("squeeze.quantized", json.dumps({"scheme": scheme.name, "observer": observer,
                                                          "layers": records}))
    out = tvm.IRModule({"main": new})
    return relax.transform.DeadCodeElimination(["main"])(relax.transform.CanonicalizeBindings()(out))
