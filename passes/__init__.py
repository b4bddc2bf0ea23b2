"""Compression and clean-up rewrites on the Relax IR, registered by name."""
from . import canonicalize, cleanup, fold_bn, quantize, weight_sharing  # noqa: F401  (registration side effect)
from .registry import make_pass, pass_names, register_pass

__all__ = ["make_pass", "pass_names", "register_pass"]
