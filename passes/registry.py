"""Named pass registry: recipes refer to passes by these names."""
from __future__ import annotations

import functools
import threading
from typing import Callable

import tvm

from compiler.errors import SqueezeError

PassFactory = Callable[..., tvm.transform.Pass]
_PASSES: dict[str, PassFactory] = {}
_pending = threading.local()


def user_errors(body: Callable) -> Callable:
    """Wrap a pass body so a :class:`SqueezeError` it raises survives TVM's FFI boundary.

    TVM re-raises Python exceptions from pass bodies as ``RuntimeError``; the original is kept
    here and :func:`reraise_user_error` restores it in the pass manager.
    """

    @functools.wraps(body)
    def wrapper(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except SqueezeError as err:
            _pending.error = err
            raise

    return wrapper


def reraise_user_error() -> None:
    """Raise the SqueezeError a pass body raised last, if any."""
    err, _pending.error = getattr(_pending, "error", None), None
    if err is not None:
        raise err


def register_pass(name: str) -> Callable[[PassFactory], PassFactory]:
    """Register a pass factory (keyword options → ``tvm.transform.Pass``) under ``name``."""

    def wrap(factory: PassFactory) -> PassFactory:
        _PASSES[name] = factory
        return factory

    return wrap


def pass_names() -> list[str]:
    """Names of all registered passes."""
    return sorted(_PASSES)


def make_pass(name: str, **options) -> tvm.transform.Pass:
    """Instantiate the pass registered as ``name`` with ``options``."""
    if name not in _PASSES:
        raise SqueezeError(f"unknown pass '{name}': choose one of {', '.join(pass_names())}")
    try:
        return _PASSES[name](**options)
    except TypeError as err:
        raise SqueezeError(f"bad options for pass '{name}': {err}") from None
