"""Prune an ONNX model end to end: graph → scores → ratios → (re-fit) → surgery → re-import."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx

from compiler.frontend import ModelLike, import_onnx, import_prepared, load_onnx, prepare_onnx
from compiler.program import Program
from passes.quantize.calibrate import load_calibration

from . import sparsity
from .calibration import Runner, channel_stats, contribution_grams, output_error, outputs_of
from .config import STRUCTURED, PruneConfig
from .depgraph import DepGraph, Plan, build_depgraph
from .importance import make_criterion
from .onnxmap import node_names
from .ratios import group_ratios, local_search, make_plan, sensitivity_ratios
from .reconstruct import Refitter, recalibrate_bn
from .surgery import masked_params, prune_onnx
from .validation import cross_entropy, load_validation

Log = Callable[[str], None]


@dataclass
class PruneResult:
    """A pruned model: as a Program ready to compile and as ONNX ready to save."""

    program: Program
    onnx: onnx.ModelProto
    summary: dict = field(default_factory=dict)


def analyze(model: ModelLike, input_shapes: Mapping[str, Sequence[int]] | None = None
            ) -> tuple[onnx.ModelProto, Program, DepGraph, dict[int, str]]:
    """Import ``model`` and build its dependency graph (also returns the import-form ONNX and
    the binding → node name map that surgery needs)."""
    proto, inputs = prepare_onnx(model, input_shapes)
    program = import_prepared(proto, inputs)
    names = node_names(proto, program)
    return proto, program, build_depgraph(program.mod, names), names


def prune_model(model: ModelLike, config: PruneConfig, input_shapes: Mapping[str, Sequence[int]] | None = None,
                log: Log | None = None) -> PruneResult:
    """Prune ``model`` as ``config`` says.

    Returns
    -------
    PruneResult
        The re-imported pruned program (weights detached, shapes re-inferred), the pruned ONNX
        model and a summary (groups, kept channels, MACs, barriers, reconstruction errors).
    """
    original = load_onnx(model)
    proto, program, graph, names = analyze(original, input_shapes)
    batches = None
    if config.calibration is not None:
        batches = load_calibration(config.calibration, program.inputs)[: config.max_samples]
    if config.granularity not in STRUCTURED:
        params, summary = sparsity.sparsify_params(program, graph, config)
        pruned = _dims_of(original, prune_onnx(proto, graph, {}, params, names))
        return PruneResult(import_onnx(pruned, input_shapes), pruned, summary)
    plan = choose_channels(program, graph, config, batches, log)
    params, records = dict(program.params), []
    if batches is not None and config.refit:
        params, records = Refitter(program, graph, batches, seed=config.seed)(plan, params, log)
    if batches is not None and config.refit_bn:
        params = recalibrate_bn(program, graph, plan, params, batches, skip=[r["layer"] for r in records])
    pruned = _dims_of(original, prune_onnx(proto, graph, plan, params, names))
    summary = structured_summary(graph, plan, config, records)
    if log is not None:
        log(f"pruned {len(plan)} channel groups: MACs {summary['macs_before']:,} -> {summary['macs_after']:,} "
            f"({summary['macs_before'] / max(summary['macs_after'], 1):.2f}x fewer)")
    return PruneResult(import_onnx(pruned, input_shapes), pruned, summary)


def _ops(proto: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in proto.graph.node if n.op_type != "Constant"]


def _dims_of(original: onnx.ModelProto, pruned: onnx.ModelProto) -> onnx.ModelProto:
    """``pruned`` with the graph input and output shapes of ``original`` (a dynamic batch, say)
    when preparing it for import folded nothing away, so that it runs at every size the original
    did; a model whose shape computations were folded keeps the static shapes it was pruned at."""
    if _ops(original) != _ops(pruned):
        return pruned
    for mine, theirs in ((pruned.graph.input, original.graph.input), (pruned.graph.output, original.graph.output)):
        shapes = {v.name: v.type for v in theirs}
        for value in mine:
            if value.name in shapes:
                value.type.CopyFrom(shapes[value.name])
    pruned.graph.ClearField("value_info")  # inferred at the static shapes
    return pruned


def choose_channels(program: Program, graph: DepGraph, config: PruneConfig, batches: Sequence[dict] | None,
                    log: Log | None = None) -> Plan:
    """Score every group with the criterion and keep the best channels at the configured ratios
    (the sensitivity scan measures each trial after re-fitting when ``config.refit``)."""
    stats = grams = None
    if config.criterion in ("apoz", "variance") and batches is not None:
        stats = channel_stats(program, graph, batches, program.params)
    if config.criterion == "reconstruction" and batches is not None:
        grams = contribution_grams(program, graph, batches, program.params, seed=config.seed)
    criterion = make_criterion(config.criterion, program.params, config.granularity, stats, config.seed, grams)
    scores = {g.id: np.asarray(criterion(g), dtype=np.float64) for g in graph.groups}
    if config.ratio == "sensitivity":
        error = _error_fn(program, graph, batches, config)
        ratios = sensitivity_ratios(graph, scores, error, config.macs_target, config.round_to, log)
        if config.search_steps:
            ratios = local_search(graph, scores, error, ratios, config.macs_target, config.round_to,
                                  config.search_steps, log=log)
    else:
        ratios = group_ratios(graph.groups, config.ratio)
    return make_plan(graph.groups, scores, ratios, config.round_to)


def _error_fn(program: Program, graph: DepGraph, batches: Sequence[dict], config: PruneConfig
              ) -> Callable[[Plan], float]:
    """How bad a plan is, after the re-fit when ``config.refit``: the cross-entropy on
    ``config.validation`` (each trial re-fitted on all calibration samples, as the final prune
    is), or without validation data the relative output error on 64 calibration samples
    (re-fitted on those)."""
    runner = Runner(program, outputs_of(program))
    if config.validation is not None:
        fit = list(batches)
        val_batches, labels = load_validation(config.validation, program.inputs)
    else:
        fit = val_batches = list(batches[:64])
        reference = list(runner.run(val_batches, program.params))
    refitter = Refitter(program, graph, fit, seed=config.seed) if config.refit else None

    def error(plan: Plan) -> float:
        if refitter is not None:
            params = refitter(plan, program.params)[0]
        else:
            params = masked_params(program.params, graph, plan)
        if config.validation is not None:
            return cross_entropy(runner, val_batches, labels, params)
        return output_error(runner, val_batches, params, reference)

    return error


def structured_summary(graph: DepGraph, plan: Plan, config: PruneConfig, records: list[dict]) -> dict:
    """What the manifest and ``squeeze inspect`` report about a structured prune."""
    removed = graph.removed(plan)
    layers = []
    for layer in graph.layers:
        out_slot = layer.out_slots[1 if layer.op == "conv2d" else -1]
        layers.append({
            "name": layer.name, "op": layer.op,
            "out_channels": [graph.new_size(out_slot, removed), graph.tracer.sizes[out_slot]],
            "in_channels": [graph.new_size(layer.k_slot, removed), graph.tracer.sizes[layer.k_slot]],
        })
    return {
        "granularity": config.granularity, "criterion": config.criterion,
        "ratio": config.ratio if not isinstance(config.ratio, float) else round(config.ratio, 4),
        "round_to": config.round_to,
        "groups": [{"name": g.name, "kept": int(len(plan.get(g.id, range(g.size)))), "size": g.size}
                   for g in graph.groups],
        "layers": layers,
        "macs_before": graph.macs(), "macs_after": graph.macs(plan),
        "barriers": [{"node": n, "reason": r} for n, r in graph.barriers],
        "reconstruction": records,
    }
