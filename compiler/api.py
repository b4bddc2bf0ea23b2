"""Python API: ``compiler.compile(model, target=...) -> Artifact`` and ``compiler.load``."""
from __future__ import annotations

import os
import time
from typing import Callable, Mapping, Sequence

import numpy as np

from passes.prune import PruneConfig, prune_model
from passes.prune.config import STRUCTURED
from passes.quantize.qdq_to_integer import has_qdq
from passes.quantize.schemes import parse_scheme
from targets import TargetSpec, get_target
from targets.sparse import PATTERN_PASSES

from . import provenance
from .artifact import Artifact, Manifest, require_compiler
from .build import compile_lowered, lift_weights, lower
from .calibration import check_skip_names
from .compress import CompressConfig, onnx_weight_bytes
from .config import QuantConfig
from .errors import SqueezeError
from .frontend import ModelLike, import_onnx, load_onnx
from .pipeline import PassSpec, Recipe, read_recipe_file, run_passes
from .program import Program, batch_of
from .profile import kernel_table
from .progress import to_stderr
from .proxy import accuracy_proxy
from .report import compression_summary
from .runtime import Module


def compile(  # noqa: A001  (the API is named after what it does, like tvm.compile)
    model: ModelLike,
    target: str | TargetSpec | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    batch_sizes: Sequence[int] | None = None,
    recipe: Recipe | str | os.PathLike | None = None,
    quantize: QuantConfig | None = None,
    prune: PruneConfig | None = None,
    compress: CompressConfig | str | None = None,
    tune_trials: int = 0,
    tuning_db: str | os.PathLike | None = None,
    dump_ir: str | os.PathLike | None = None,
    calibration=None,
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
        Static shapes: they fix dynamic dims and may change the batch (first) dim of static inputs.
    batch_sizes : sequence of int, optional
        Batch sizes the artifact holds, one library each, e.g. ``(1, 8, 32)``; the first is the
        default (``manifest.inputs``), and ``Module.run`` picks by the inputs' leading dim.
        Default: the batch of ``input_shapes`` or of the model. Pruning and calibration run
        once, at that base batch.
    recipe : Recipe or path to a TOML recipe, optional
        Passes run after the default clean-ups.
    quantize : QuantConfig, optional
        Post-training quantization into the integer IR (after the recipe's passes).
    prune : PruneConfig, optional
        Structured pruning or sparsity, applied first (default: a recipe file's ``[prune]`` table).
    compress : CompressConfig or str, optional
        Deep Compression storage, e.g. ``"kmeans:16,huffman"``: k-means weight sharing before
        quantization, Huffman-coded weights outside the library (see :class:`CompressConfig`).
    tune_trials : int
        MetaSchedule trials (0: default schedules only, or records already in ``tuning_db``);
        with several batch sizes, each batch's kernels are tuned with this budget.
    tuning_db : path, optional
        MetaSchedule database directory, created or extended by tuning and reused by later compiles.
    dump_ir : path, optional
        Directory receiving the IR after each pass (other batches than the default: ``bN/``).
    calibration : calibration source, optional
        Data for a recipe file's ``[prune]`` and ``[quantize]`` tables that name none.
    log : callable, optional
        Receives progress lines (without one, the dynamic dims fixed to 1 are told on stderr).
    """
    spec = get_target(target)
    if spec.cross_compiler is not None:  # before the model's passes, not after
        require_compiler(spec.cross_compiler)
    if tune_trials > 0 and tuning_db is None:
        raise SqueezeError("tune_trials needs tuning_db: the directory where records are kept")
    compress = CompressConfig.parse(compress) if isinstance(compress, str) else compress or CompressConfig()
    recipe, prune, quantize = _options(recipe, prune, quantize, calibration)
    program, passes, source = _front(model, spec, input_shapes, recipe, prune, quantize, log, compress)
    base = batch_of(program.inputs)
    batches = _batch_list(batch_sizes, program, base)
    builds = {b: _build(rebatched, spec, tune_trials, tuning_db, log, compress.huffman)
              for b, rebatched in _passed_batches(program, passes, source, batches, dump_ir, log)}
    default = builds[batches[0]][0]
    manifest = Manifest(
        inputs=default.inputs,
        outputs=default.outputs,
        target=target_record(spec),
        summary=default.summary,
        files={},
        versions={},
    )
    if quantize is not None:  # for `squeeze export art.tar`
        manifest.summary["source"] = provenance.record(model, input_shapes, quantize, spec.name, prune is not None,
                                                       [p.name for p in (recipe.passes if recipe else [])])
    artifact = Artifact.from_executables([(builds[b][1], builds[b][0].inputs, builds[b][0].outputs)
                                          for b in batches], manifest, spec.cross_compiler,
                                         [builds[b][2] for b in batches] if compress.huffman else None)
    lifted = sum(w.nbytes for w in builds[batches[0]][2])
    manifest.summary["storage"] = _storage(default.summary.pop("weight_bytes"), lifted, len(artifact.weights),
                                           load_onnx(model), compress)
    data = (quantize.calibration if quantize else None) or (prune.calibration if prune else None)
    if data is not None and spec.runs_on_host():  # the accuracy proxy, through the library as saved
        checked = builds[base if base in builds else batches[0]][0]
        manifest.summary["accuracy_proxy"] = accuracy_proxy(Module(artifact).run, load_onnx(model), checked.inputs,
                                                            data, log)
    return artifact


def prepare(model: ModelLike, spec: TargetSpec, *, input_shapes: Mapping[str, Sequence[int]] | None = None,
            recipe: Recipe | str | os.PathLike | None = None, quantize: QuantConfig | None = None,
            prune: PruneConfig | None = None, calibration=None, batch_sizes: Sequence[int] | None = None,
            dump_ir: str | os.PathLike | None = None,
            log: Callable[[str], None] | None = None) -> dict[int, Program]:
    """The Programs that ``squeeze tune`` tunes, by batch size: what :func:`compile` builds,
    imported, pruned and with its passes run (calibrated once); options checked before any work."""
    recipe, prune, quantize = _options(recipe, prune, quantize, calibration)
    program, passes, source = _front(model, spec, input_shapes, recipe, prune, quantize, log)
    batches = _batch_list(batch_sizes, program, batch_of(program.inputs))
    return dict(_passed_batches(program, passes, source, batches, dump_ir, log))


def _options(recipe, prune: PruneConfig | None, quantize: QuantConfig | None, calibration):
    """The recipe, pruning and quantization settings, a recipe file's tables included (its
    ``[prune]`` and ``[quantize]`` get ``calibration`` when they name no data), all checked
    now: nothing has run yet when one is wrong."""
    if recipe is not None and not isinstance(recipe, Recipe):
        doc, origin = read_recipe_file(recipe), f"recipe {recipe}"   # read once, checked against the schema
        recipe = Recipe.from_document(doc, origin)
        prune = prune or PruneConfig.from_table(doc.get("prune"), origin,
                                                **({"calibration": calibration} if calibration is not None else {}))
        quantize = quantize or QuantConfig.from_table(doc.get("quantize"), origin, calibration=calibration)
    if recipe is not None:
        recipe.validate()
    if prune is not None and prune.granularity in STRUCTURED and prune.calibration is None:
        raise SqueezeError(f"{prune.granularity} pruning without calibration data is not re-fitted and leaves the "
                           "model broken: add calibration data (--calib data.npz), or prune with `squeeze prune` "
                           "and fine-tune the pruned ONNX elsewhere")
    return recipe, prune, quantize


def _front(model: ModelLike, spec: TargetSpec, input_shapes, recipe: Recipe | None, prune: PruneConfig | None,
           quantize: QuantConfig | None, log,
           compress: CompressConfig | None = None) -> tuple[Program, Recipe, ModelLike]:
    """Import and prune ``model``; returns the program, the passes to run on it and the ONNX
    model it came from (the pruned one after pruning). Weight sharing (``compress``) runs right
    before the quantize step (after equalization, which rescales channels)."""
    quantize_passes = quantize.recipe(progress=log is not None, target=spec).validate() if quantize else Recipe()
    if compress is not None:
        relative = quantize is not None and parse_scheme(quantize.scheme or spec.quant_scheme).weights.per_channel
        steps = quantize_passes.passes
        quantize_passes = Recipe(steps[:-1]) + compress.sharing(relative) + Recipe(steps[-1:])
    program = import_onnx(model, input_shapes, log=log or to_stderr)
    if quantize is not None:
        check_skip_names(program.mod, quantize.skip)  # a typo fails now, not after pruning
    prune_passes, source = Recipe(), model
    if prune is not None:
        program, prune_passes, source = _prune(model, prune, spec, input_shapes, log)
    passes = Recipe.cleanups() + prune_passes + (recipe or Recipe())
    if has_qdq(program.mod):  # QAT / ORT-quantized model: its Q/DQ pairs become integer compute first
        passes = Recipe([PassSpec("qdq_to_integer")]) + passes
    return program, passes + quantize_passes, source


def _batch_list(batch_sizes: Sequence[int] | None, program: Program, base: int) -> list[int]:
    """``batch_sizes`` checked and without repeats (default: the base batch alone)."""
    if batch_sizes is None:
        return [base]
    sizes = list(dict.fromkeys(batch_sizes))
    if not sizes or any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1 for b in sizes):
        raise SqueezeError(f"bad batch sizes {list(batch_sizes)}: give positive integers, e.g. --batch 1,8,32")
    scalars = [s.name for s in program.inputs if not s.shape]
    if scalars:
        raise SqueezeError(f"input {scalars[0]!r} is a scalar, it has no batch dim: compile without --batch")
    other = next((s for s in program.inputs if s.shape[0] != base), None)
    if other is not None and sizes != [base]:  # e.g. a recurrent state [2, batch, 128]: its batch is elsewhere
        raise SqueezeError(f"input {other.name!r} leads with {other.shape[0]}, not the batch {base} of "
                           f"{program.inputs[0].name!r}: --batch needs every input to lead with the batch; compile "
                           "without it")
    return [int(b) for b in sizes]


def _rebatch(source: ModelLike, program: Program, batch: int) -> Program:
    """``source`` (the model, or its pruned ONNX) re-imported with every input's batch set to ``batch``."""
    shapes = {s.name: (batch, *s.shape[1:]) for s in program.inputs}
    rebatched = import_onnx(source, shapes)
    rebatched.summary.update({k: v for k, v in program.summary.items() if k == "prune"})
    return rebatched


def _calibrate_once(passes: Recipe) -> Recipe:
    """``passes`` with each ``quantize`` step given a cache its compiles at every batch share,
    so that calibration runs once (see :func:`compiler.calibration.quantize`)."""
    return Recipe([PassSpec(p.name, {**p.options, "cache": {}}) if p.name == "quantize" else p
                   for p in passes.passes])


def _passed_batches(program: Program, passes: Recipe, source: ModelLike, batches: list[int],
                    dump_ir: str | os.PathLike | None, log: Callable[[str], None] | None):
    """``(batch, program with passes run)`` for each of ``batches``, the model's own batch first:
    calibration runs once, at that batch, and the other batches' quantize steps reuse it. The
    default (first) batch's IR goes to ``dump_ir``, another batch B's to ``dump_ir/bB``."""
    base = batch_of(program.inputs)
    passes = _calibrate_once(passes)
    if base not in batches and any(p.name == "quantize" for p in passes.passes):
        if log is not None:
            log(f"calibrating at the model's batch {base}")
        run_passes(program, passes)  # fills the calibration cache the batches share
    for b in sorted(batches, key=lambda b: b != base):
        if len(batches) > 1 and log is not None:
            log(f"batch {b}:")
        rebatched = program if b == base else _rebatch(source, program, b)
        out = dump_ir if dump_ir is None or b == batches[0] else os.path.join(dump_ir, f"b{b}")
        rebatched = run_passes(rebatched, passes, dump_ir=out, log=log)
        rebatched.summary.update(compression_summary(rebatched.mod))
        yield b, rebatched


def _build(program: Program, spec: TargetSpec, tune_trials: int, tuning_db: str | os.PathLike | None,
           log: Callable[[str], None] | None,
           lift: bool = False) -> tuple[Program, "tvm.runtime.Executable", list[np.ndarray]]:
    """Tune (with the whole budget), lower and build ``program``; returns it, the executable and,
    with ``lift``, the weights lifted out of its library (:func:`compiler.build.lift_weights`)."""
    if tune_trials > 0:
        from .tune import tune

        tune(program, spec, tuning_db, tune_trials, progress=log is not None)
    lowered = lower(program, spec, tuning_db)
    program.summary["kernels"] = kernel_table(lowered)
    program.summary["weight_bytes"] = sum(w.nbytes for w in lift_weights(lowered, 0)[1])
    lifted: list[np.ndarray] = []
    if lift:
        lowered, lifted = lift_weights(lowered)
    say, start = log or (lambda _line: None), time.perf_counter()
    note = _low_bit_note(program.summary, spec)
    if note:
        say(note)
    say(f"building the library for {spec.name} (LLVM) ...")
    executable = compile_lowered(lowered, spec)
    say(f"built in {time.perf_counter() - start:.1f} s")
    return program, executable, lifted


def _storage(weight_bytes: int, lifted: int, member: int, onnx_model, compress: CompressConfig) -> dict:
    """What the manifest records of the weights' size: the FP32 ONNX model's, the compiled
    kernels' (``weight_bytes``, default batch) and as stored: the ``lifted`` bytes of them left
    the library for a ``member`` of that many bytes (:mod:`compiler.weights`)."""
    stored = weight_bytes - lifted + member
    onnx_bytes = onnx_weight_bytes(onnx_model)
    return {"onnx_weight_bytes": onnx_bytes, "weight_bytes": weight_bytes, "stored_weight_bytes": stored,
            "ratio": round(onnx_bytes / max(stored, 1), 2),
            "compress": {"kmeans": compress.clusters, "per_channel": compress.per_channel,
                         "huffman": compress.huffman}}


def _low_bit_note(summary: dict, spec: TargetSpec) -> str:
    """A line saying how many layers below 8 bits fall back to int8 kernels ("" if none)."""
    from .inspect_artifact import layer_bits

    records = (summary.get("quantization") or {}).get("layers", [])
    low = sum(1 for r in records if any(b is not None and b < 8 for b in layer_bits(r["mode"])))
    serial = sum(1 for k in summary.get("kernels", {}).values() if k["kernel"].startswith("bitserial"))
    if low <= serial:
        return ""
    where = f"its bit-serial kernels take {spec.bitserial}" if spec.bitserial else "it has no bit-serial kernels"
    return f"note: {low - serial} of {low} layers below 8 bits run on {spec.name}'s int8 kernels ({where})"


def target_record(spec: TargetSpec) -> dict:
    """What the manifest says of the target: where the code runs (triple, architecture, CPU,
    device kind) and the instruction-set extensions it needs (not LLVM's tuning flags)."""
    return {"name": spec.name, "json": spec.target_json, "triple": spec.triple, "arch": spec.arch,
            "cpu": spec.target_json.get("mcpu", ""), "device": spec.device, "isa": spec.isa}


def _prune(model: ModelLike, config: PruneConfig, spec: TargetSpec,
           input_shapes: Mapping[str, Sequence[int]] | None = None,
           log: Callable[[str], None] | None = None) -> tuple[Program, Recipe, "onnx.ModelProto"]:
    """Prune ``model`` for ``spec``.

    Returns
    -------
    program : Program
        The pruned, re-imported program; ``summary["prune"]`` records what was done.
    recipe : Recipe
        The sparse-kernel pass of ``granularity`` "block" or "nm" where the target declares
        that kernel (``TargetSpec.sparse``), to run after the clean-ups; else nothing.
    onnx : ModelProto
        The pruned ONNX model (re-imported at other batch sizes).
    """
    result = prune_model(model, config, input_shapes, log)
    result.program.summary["prune"] = result.summary
    options = {"block": {"block": tuple(config.block)}, "nm": {"nm": tuple(config.nm)}}
    if config.granularity not in PATTERN_PASSES:
        return result.program, Recipe(), result.onnx
    if config.granularity not in spec.sparse:
        if log is not None:
            log(f"{config.granularity} sparsity: no kernel faster than dense on {spec.name}, the weights run dense")
        return result.program, Recipe(), result.onnx
    return (result.program, Recipe([PassSpec(PATTERN_PASSES[config.granularity], options[config.granularity])]),
            result.onnx)


def load(path: str | os.PathLike, rpc: str | None = None) -> Module:
    """Load an artifact for running, locally or on the TVM RPC server at ``rpc`` ("host:port")."""
    return Module(Artifact.read(path), rpc=rpc)
