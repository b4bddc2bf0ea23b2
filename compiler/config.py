"""User-facing compression configs; each turns into recipe passes."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Optional, Sequence

from passes.quantize.calibrate import ImageFolder

from .errors import SqueezeError
from .pipeline import PassSpec, Recipe, read_recipe_file

if TYPE_CHECKING:
    from targets import TargetSpec

__all__ = ["QuantConfig", "ImageFolder"]


@dataclass
class QuantConfig:
    """Post-training quantization settings.

    Parameters
    ----------
    scheme : str, optional
        None: the target's default (``TargetSpec.quant_scheme``). A name or alias: ``int8``
        (= ``w8_sym_per_channel__a8_asym_per_tensor``),
        ``int8_sym``, ``int8_per_tensor``, ``int8_pow2``, ``int4``, ``int8_integer_only`` or a
        full name such as ``w8_sym_per_channel__a8_asym_per_tensor__fixed_point``.
    calibration : path to .npz, ImageFolder, dict of arrays or iterable of batches
        Representative inputs.
    observer : str
        ``minmax``, ``moving_average``, ``percentile``, ``entropy`` or ``mse``.
    skip, skip_ops : sequence of str
        Layers (ONNX node names or ``conv2d_3``) and op types kept float.
    keep_first_last : bool
        Keep the first and last conv/matmul layers float.
    equalize : bool
        Cross-layer equalization before quantization.
    bias_correction : bool or "auto"
        Correct the output shift quantization causes: ``"auto"`` (the default) per layer where it
        lowers the layer's output error on held-out calibration rows, ``True`` every layer (from
        the input means), ``False`` none.
    adaround, adaround_iters : bool, int
        Learned rounding of the weight codes per layer (AdaRound), with that many Adam steps.
    range_search : bool
        Layer-input ranges and per-channel weight clipping chosen by the layer's output MSE.
    smoothquant : float, optional
        SmoothQuant's alpha (0.5 is the paper's): migrate LayerNorm outputs' outlier channels
        into the weights of the matmuls reading them before calibrating (None: off).
    layer_schemes : dict, optional
        Mixed precision: ``{layer: scheme}`` for layers (``conv2d_3`` or ONNX node names) whose
        weights use another scheme, e.g. ``{"conv2d_3": "int4"}``; ``scheme`` stays the base
        (float layers: ``skip``).
    """

    scheme: Optional[str] = None
    calibration: Any = None
    observer: str = "minmax"
    skip: Sequence[str] = ()
    skip_ops: Sequence[str] = ()
    keep_first_last: bool = False
    equalize: bool = False
    bias_correction: bool | str = "auto"  # measured better than off on the corpus (see bench/RESULTS.md)
    observer_options: dict = field(default_factory=dict)
    layer_schemes: dict = field(default_factory=dict)
    adaround: bool = False
    adaround_iters: int = 400
    range_search: bool = False
    smoothquant: Optional[float] = None

    @classmethod
    def from_toml(cls, path: str | os.PathLike, **defaults) -> "QuantConfig | None":
        """The ``[quantize]`` table of a recipe file (None without one); ``defaults`` fill keys
        it leaves out (e.g. the command line's calibration data). Unknown keys are errors."""
        return cls.from_table(read_recipe_file(path).get("quantize"), f"recipe {path}", **defaults)

    @classmethod
    def from_table(cls, table: dict | None, origin: str, **defaults) -> "QuantConfig | None":
        """A parsed ``[quantize]`` table (None gives None); unknown keys are errors naming ``origin``."""
        if table is None:
            return None
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - names)
        if unknown:
            raise SqueezeError(f"{origin}: unknown [quantize] keys {unknown}: use {', '.join(sorted(names))}")
        return cls(**{**{k: v for k, v in defaults.items() if v is not None}, **table})

    def recipe(self, progress: bool = True, target: "TargetSpec | None" = None) -> Recipe:
        """The passes this config stands for; ``target`` decides the default scheme and which
        layer kinds are quantized (those it runs in integer kernels)."""
        passes = [PassSpec("equalize")] if self.equalize else []
        scheme = self.scheme or (target.quant_scheme if target is not None else "int8")
        passes.append(PassSpec("quantize", {
            "scheme": scheme, "calibration": self.calibration, "observer": self.observer,
            "ops": tuple(sorted(target.integer_ops)) if target is not None else None,
            "skip": tuple(self.skip), "skip_ops": tuple(self.skip_ops),
            "keep_first_last": self.keep_first_last, "bias_correction": self.bias_correction,
            "observer_options": dict(self.observer_options), "progress": progress,
            **({"layer_schemes": dict(self.layer_schemes)} if self.layer_schemes else {}),
            "adaround": self.adaround, "adaround_iters": self.adaround_iters, "range_search": self.range_search,
            "smoothquant": self.smoothquant,
        }))
        return Recipe(passes)
