"""Structured pruning and sparsity on the Relax IR.

``depgraph`` (channel groups) → ``importance`` (criteria) → ``ratios`` → ``reconstruct`` (least
squares re-fit) → ``surgery`` (ONNX edit + re-import); ``sparsity`` and ``bsr`` for N:M, block and
element-wise patterns. :func:`prune_program` is what ``compiler.compile(..., prune=...)`` calls.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from compiler.frontend import ModelLike
from compiler.pipeline import PassSpec, Recipe
from compiler.program import Program

from . import bsr  # noqa: F401  (registers the block_sparse pass)
from .config import PruneConfig
from .depgraph import DepGraph, Group, build_depgraph
from .importance import FPGM, L1, L2, APoZ, BNScale, OutputVariance, Random, ReconstructionError, make_criterion
from .pruner import PruneResult, analyze, prune_model

__all__ = ["PruneConfig", "DepGraph", "Group", "build_depgraph", "L1", "L2", "FPGM", "BNScale", "APoZ",
           "OutputVariance", "ReconstructionError", "Random", "make_criterion", "PruneResult", "analyze",
           "prune_model", "prune_program"]


def prune_program(model: ModelLike, config: PruneConfig, input_shapes: Mapping[str, Sequence[int]] | None = None,
                  log: Callable[[str], None] | None = None) -> tuple[Program, Recipe]:
    """Prune ``model`` for compilation.

    Returns
    -------
    program : Program
        The pruned, re-imported program; ``summary["prune"]`` records what was done.
    recipe : Recipe
        Passes to run after the clean-ups (the block-sparse kernels for ``granularity="block"``).
    """
    result = prune_model(model, config, input_shapes, log)
    result.program.summary["prune"] = result.summary
    if config.granularity == "block":
        return result.program, Recipe([PassSpec(bsr.BLOCK_SPARSE, {"block": tuple(config.block)})])
    return result.program, Recipe()
