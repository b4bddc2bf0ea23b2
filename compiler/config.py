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
    equalize, bias_correction : bool
        Cross-layer equalization before, and bias correction after, quantization.
    """

    scheme: Optional[str] = None
    calibration: Any = None
    observer: str = "minmax"
    skip: Sequence[str] = ()
    skip_ops: Sequence[str] = ()
    keep_first_last: bool = False
    equalize: bool = False
    bias_correction: bool = False
    observer_options: dict = field(default_factory=dict)

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
        }))
        return Recipe(passes)
