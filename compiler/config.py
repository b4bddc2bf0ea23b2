"""User-facing compression configs; each turns into recipe passes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

from passes.quantize.calibrate import ImageFolder

from .pipeline import PassSpec, Recipe

if TYPE_CHECKING:
    from targets import TargetSpec

__all__ = ["QuantConfig", "ImageFolder"]


@dataclass
class QuantConfig:
    """Post-training quantization settings.

    Parameters
    ----------
    scheme : str, optional
        None: the target's default (``TargetSpec.quant_scheme``). A name or alias: ``int8`` (= ``w8_sym_per_channel__a8_asym_per_tensor``),
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
            "progress": progress,
        }))
        return Recipe(passes)
