"""Squeeze: prune, quantize and compile ONNX models with Apache TVM.

The public names load lazily, so torch-side helpers (``compiler.zoo.export``) import this
package in a venv without TVM.
"""
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "compile": "api", "load": "api", "Artifact": "artifact", "Module": "runtime",
    "Recipe": "pipeline", "PassSpec": "pipeline", "SqueezeError": "errors", "QuantConfig": "config",
    "ImageFolder": "config", "PruneConfig": "api", "export_qdq": "onnx_export", "CompressConfig": "compress",
    "optimize": "search",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'compiler' has no attribute {name!r}")
