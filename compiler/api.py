"""Python API: ``compiler.compile(model, target=...) -> Artifact`` and ``compiler.load``."""
from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

from passes.prune import PruneConfig, prune_model
from passes.quantize.qdq_to_integer import has_qdq
from targets import TargetSpec, get_target, host_target
from targets.sparse import PATTERN_PASSES

from .artifact import Artifact, Manifest
from .build import compile_lowered, lower
from .config import QuantConfig
from .frontend import ModelLike, import_onnx
from .pipeline import PassSpec, Recipe, run_passes
from .program import Program
from .profile import kernel_table
from .report import compression_summary
from .runtime import Module


def compile(  # noqa: A001  (the API is named after what it does, like tvm.compile)
    model: ModelLike,
    target: str | TargetSpec | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    recipe: Recipe | str | os.PathLike | None = None,
    quantize: QuantConfig | None = None,
    prune: PruneConfig | None = None,
    tune_trials: int = 0,
    tuning_db: str | os.PathLike | None = None,
    dump_ir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> Artifact:
    """Compile an ONNX model into an :class:`Artifact`.

    Parameters
    ----------
    model : path or onnx.ModelProto
        The model.
    target : str or TargetSpec, optional
        A registered target name (see ``squeeze targets``); default: this host's target.
    input_shapes : dict, optional
        Static shapes for dynamic inputs.
    recipe : Recipe or path to a TOML recipe, optional
        Passes run after the default clean-ups.
    quantize : QuantConfig, optional
        Post-training quantization into the integer IR (after the recipe's passes).
    prune : PruneConfig, optional
        Structured pruning or sparsity, applied first (default: a recipe file's ``[prune]`` table).
    tune_trials : int
        MetaSchedule trials (0: default schedules only, or records already in ``tuning_db``).
    tuning_db : path, optional
        MetaSchedule database directory, created or extended by tuning and reused by later compiles.
    dump_ir : path, optional
        Directory receiving the IR after each pass.
    log : callable, optional
        Receives progress lines.
    """
    spec = get_target(target) if target is not None else host_target()
    program = import_onnx(model, input_shapes)
    if prune is None and recipe is not None and not isinstance(recipe, Recipe):
        prune = PruneConfig.from_toml(recipe)
    if recipe is not None and not isinstance(recipe, Recipe):
        recipe = Recipe.from_toml(recipe)
    prune_passes = Recipe()
    if prune is not None:
        program, prune_passes = prune_program(model, prune, spec, input_shapes, log)
    passes = Recipe.cleanups() + prune_passes + (recipe or Recipe())
    if has_qdq(program.mod):  # QAT / ORT-quantized model: its Q/DQ pairs become integer compute first
        passes = Recipe([PassSpec("qdq_to_integer")]) + passes
    if quantize is not None:
        passes = passes + quantize.recipe(progress=log is not None, target=spec)
    program = run_passes(program, passes, dump_ir=dump_ir, log=log)
    program.summary.update(compression_summary(program.mod))
    if tune_trials > 0:
        from .tune import tune

        if tuning_db is None:
            raise ValueError("tune_trials needs tuning_db: the directory where records are kept")
        tune(program, spec, tuning_db, tune_trials, progress=log is not None)
    lowered = lower(program, spec, tuning_db)
    program.summary["kernels"] = kernel_table(lowered)
    executable = compile_lowered(lowered, spec)
    manifest = Manifest(
        inputs=program.inputs,
        outputs=program.outputs,
        target=target_record(spec),
        summary=program.summary,
        files={},
        versions={},
    )
    return Artifact.from_executable(executable, manifest, spec.cross_compiler)


def target_record(spec: TargetSpec) -> dict:
    """What the manifest says of the target: where the code runs (triple, architecture, CPU,
    device kind) and the instruction-set extensions it needs (not LLVM's tuning flags)."""
    return {"name": spec.name, "json": spec.target_json, "triple": spec.triple, "arch": spec.arch,
            "cpu": spec.target_json.get("mcpu", ""), "device": spec.device, "isa": spec.isa}


def prune_program(model: ModelLike, config: PruneConfig, spec: TargetSpec,
                  input_shapes: Mapping[str, Sequence[int]] | None = None,
                  log: Callable[[str], None] | None = None) -> tuple[Program, Recipe]:
    """Prune ``model`` for ``spec``.

    Returns
    -------
    program : Program
        The pruned, re-imported program; ``summary["prune"]`` records what was done.
    recipe : Recipe
        The sparse-kernel pass of ``granularity`` "block" or "nm" where the target declares
        that kernel (``TargetSpec.sparse``), to run after the clean-ups; else nothing.
    """
    result = prune_model(model, config, input_shapes, log)
    result.program.summary["prune"] = result.summary
    options = {"block": {"block": tuple(config.block)}, "nm": {"nm": tuple(config.nm)}}
    if config.granularity not in PATTERN_PASSES:
        return result.program, Recipe()
    if config.granularity not in spec.sparse:
        if log is not None:
            log(f"{config.granularity} sparsity: no kernel faster than dense on {spec.name}, the weights run dense")
        return result.program, Recipe()
    return result.program, Recipe([PassSpec(PATTERN_PASSES[config.granularity], options[config.granularity])])


def load(path: str | os.PathLike, rpc: str | None = None) -> Module:
    """Load an artifact for running, locally or on the TVM RPC server at ``rpc`` ("host:port")."""
    return Module(Artifact.read(path), rpc=rpc)
