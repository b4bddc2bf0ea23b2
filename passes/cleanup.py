"""Pure graph clean-ups: constant folding and dead-code removal."""
from __future__ import annotations

import tvm
from tvm import relax

from .registry import register_pass


@register_pass("fold_constant")
def fold_constant() -> tvm.transform.Pass:
    """Evaluate every op whose inputs are all constants at compile time.

    Returns
    -------
    tvm.transform.Pass
        Relax ``FoldConstant`` (weights must be bound as constants first).
    """
    return relax.transform.FoldConstant()


@register_pass("dead_code")
def dead_code() -> tvm.transform.Pass:
    """Remove bindings and functions that no output depends on.

    Returns
    -------
    tvm.transform.Pass
        Relax ``DeadCodeElimination`` keeping ``main``.
    """
    return relax.transform.DeadCodeElimination(["main"])
