"""Structured pruning and sparsity on the Relax IR.

``depgraph`` (channel groups) → ``importance`` (criteria) → ``ratios`` → ``reconstruct`` (least
squares re-fit) → ``surgery`` (ONNX edit + re-import); ``sparsity`` for N:M, block and
element-wise masks (their kernels live in ``targets.sparse``). ``compiler.compile(...,
prune=...)`` calls :func:`prune_model`.
"""
from __future__ import annotations

from .config import PruneConfig
from .depgraph import DepGraph, Group, build_depgraph
from .importance import FPGM, L1, L2, APoZ, BNScale, OutputVariance, Random, ReconstructionError, make_criterion
from .pruner import PruneResult, analyze, prune_model

__all__ = ["PruneConfig", "DepGraph", "Group", "build_depgraph", "L1", "L2", "FPGM", "BNScale", "APoZ",
           "OutputVariance", "ReconstructionError", "Random", "make_criterion", "PruneResult", "analyze",
           "prune_model"]
