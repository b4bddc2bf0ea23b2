"""Targets registry: each subpackage registers the targets it provides."""
from __future__ import annotations

from compiler.errors import SqueezeError

from .base import OpSupport, TargetSpec

_REGISTRY: dict[str, "callable"] = {}


def register_target(name: str):
    """Register a zero-argument factory returning a :class:`TargetSpec` under ``name``."""

    def wrap(factory):
        _REGISTRY[name] = factory
        return factory

    return wrap


def target_names() -> list[str]:
    """Names of all registered targets."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_target(name: "str | TargetSpec") -> TargetSpec:
    """Resolve a target name (or pass a spec through); unknown names list the valid ones."""
    if isinstance(name, TargetSpec):
        return name
    _load_builtin()
    if name not in _REGISTRY:
        raise SqueezeError(f"unknown target '{name}': choose one of {', '.join(target_names())}")
    return _REGISTRY[name]()


def _load_builtin() -> None:
    from . import llvm, x86  # noqa: F401  (registration side effect)


__all__ = ["OpSupport", "TargetSpec", "register_target", "get_target", "target_names"]
