"""Squeeze: prune, quantize and compile ONNX models with Apache TVM."""
__version__ = "0.1.0"

from .api import compile, load  # noqa: E402,A004
from .artifact import Artifact  # noqa: E402
from .errors import SqueezeError  # noqa: E402
from .pipeline import PassSpec, Recipe  # noqa: E402
from .runtime import Module  # noqa: E402

__all__ = ["compile", "load", "Artifact", "Module", "Recipe", "PassSpec", "SqueezeError"]
