"""The target registry: subpackages register factories of :class:`~targets.base.TargetSpec` here."""
from __future__ import annotations

from typing import Callable

from compiler.errors import SqueezeError

from .base import TargetSpec
from .host import host_triple, triple_arch

_REGISTRY: dict[str, Callable[[], TargetSpec]] = {}
_HOST: dict[str, str] = {}  # architecture -> the target that compiles for a host of it
_DEVICES: dict[str, Callable] = {}  # device kind (TargetSpec.device) -> opener(manifest target record)
FALLBACK_HOST = "llvm"


def register_target(name: str, host_arch: str | None = None):
    """Register a zero-argument factory returning a :class:`TargetSpec` under ``name``;
    ``host_arch`` marks it as the target for hosts of that architecture (``x86_64``)."""

    def wrap(factory: Callable[[], TargetSpec]) -> Callable[[], TargetSpec]:
        _REGISTRY[name] = factory
        if host_arch is not None:
            _HOST[host_arch] = name
        return factory

    return wrap


def host_target() -> TargetSpec:
    """The target for this machine (where calibration and pruning runs are built)."""
    return get_target(_HOST.get(triple_arch(host_triple()), FALLBACK_HOST))


def target_names() -> list[str]:
    """Names of all registered targets."""
    return sorted(_REGISTRY)


def get_target(name: "str | TargetSpec | None") -> TargetSpec:
    """Resolve a target name (or pass a spec through; None: :func:`host_target`); unknown names
    list the valid ones."""
    if name is None:
        return host_target()
    if isinstance(name, TargetSpec):
        return name
    if name not in _REGISTRY:
        raise SqueezeError(f"unknown target '{name}': choose one of {', '.join(target_names())}")
    return _REGISTRY[name]()


def register_device(kind: str, opener: Callable) -> None:
    """Register how the runtime opens devices of ``kind`` (``TargetSpec.device`` other than
    ``cpu``): ``opener(record)`` takes the manifest's target record and returns the local
    ``tvm.runtime.Device``, or raises SqueezeError with one line saying what is missing."""
    _DEVICES[kind] = opener


def open_device(record: dict):
    """The local device an artifact whose manifest target record is ``record`` runs on (not the CPU)."""
    kind = record.get("device", "cpu")
    if kind not in _DEVICES:
        raise SqueezeError(f"artifact runs on a '{kind}' device, which no target of this Squeeze opens")
    return _DEVICES[kind](record)
