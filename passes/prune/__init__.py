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

from . import bsr, nm  # registers the block_sparse and nm_sparse passes
from .config import PruneConfig
from .depgraph import DepGraph, Group, build_depgraph
from .importance import FPGM, L1, L2, APoZ, BNScale, OutputVariance, Random, ReconstructionError, make_criterion
from .pruner import PruneResult, analyze, prune_model

__all__ = ["PruneConfig", "DepGraph", "Group", "build_depgraph", "L1", "L2", "FPGM", "BNScale", "APoZ",
           "OutputVariance", "ReconstructionError", "Random", "make_criterion", "PruneResult", "analyze",
           "prune_model", "prune_program"]


def prune_program(model: ModelLike, config: PruneConfig, input_shapes: Mapping[str, Sequence[int]] | None = None,
                  log: Callable[[str], None] | None = None, sparse_kernels: Sequence[str] = ("block",)
                  ) -> tuple[Program, Recipe]:
    """Prune ``model`` for compilation; ``sparse_kernels`` are the patterns the target runs
    faster than dense (``TargetSpec.sparse``).

    Returns
    -------
    program : Program
        The pruned, re-imported program; ``summary["prune"]`` records what was done.
    recipe : Recipe
        Passes to run after the clean-ups: the sparse kernels of ``granularity`` "block" or
        "nm" where the target has them.
    """
    result = prune_model(model, config, input_shapes, log)
    result.program.summary["prune"] = result.summary
    kernels = {"block": PassSpec(bsr.BLOCK_SPARSE, {"block": tuple(config.block)}),
               "nm": PassSpec(nm.NM_SPARSE, {"nm": tuple(config.nm)})}
    if config.granularity not in kernels:
        return result.program, Recipe()
    if config.granularity not in sparse_kernels:
        if log is not None:
            log(f"{config.granularity} sparsity: no kernel faster than dense on this target, the weights run dense")
        return result.program, Recipe()
    return result.program, Recipe([kernels[config.granularity]])
