"""Sparse kernels for pruned weights: block-sparse (BSR) and N:M dense layers.

Each registers a pass (``block_sparse``, ``nm_sparse``) that rewrites dense layers whose
constant weight has the pattern into calls of its kernel; a target lists the patterns
whose kernels beat dense layers on it in ``TargetSpec.sparse``.
"""
from . import bsr, nm  # noqa: F401  (registers the block_sparse and nm_sparse passes)
from .bsr import BLOCK_SPARSE
from .nm import NM_SPARSE

PATTERN_PASSES = {"block": BLOCK_SPARSE, "nm": NM_SPARSE}

__all__ = ["BLOCK_SPARSE", "NM_SPARSE", "PATTERN_PASSES"]
