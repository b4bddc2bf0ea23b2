"""The ``squeeze`` command: compile | run | tune | inspect | targets (tvmc-style)."""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

from . import prune_cli, verbs
from .cli_args import (add_calibration_args, add_quantization_args, batch_arg, calibration_source, load_npz, log,
                       quant_config, save_npz, shape_arg)
from .errors import SqueezeError

LAYER_COLUMNS = ["name", "op", "input", "output", "dtype", "macs", "param_bytes"]


def _compression(args) -> dict:
    """The compile options shared by ``compile`` and ``tune``, validated."""
    data = calibration_source(args)
    return dict(input_shapes=dict(args.input_shape or []), recipe=args.recipe, quantize=quant_config(args, data),
                prune=prune_cli.compile_config(args, data), calibration=data)


def cmd_compile(args) -> None:
    import compiler

    from .atomic import check_writable
    from .compress import CompressConfig, storage_line

    if Path(args.output).suffix != ".tar":
        raise SqueezeError(f"-o {args.output}: an artifact is a .tar file, name it e.g. "
                           f"{Path(args.output).with_suffix('.tar').name}")
    compress = CompressConfig.parse(args.compress) if args.compress else None
    check_writable(args.output)
    art = compiler.compile(
        args.model,
        args.target,
        **_compression(args),
        compress=compress,
        batch_sizes=args.batch,
        tune_trials=args.tune_trials,
        tuning_db=args.tuning_db,
        dump_ir=args.dump_ir,
        log=log,
    )
    out = art.save(args.output)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, target {art.manifest.target['name']})")
    log(storage_line(art.manifest.summary["storage"]))


def cmd_run(args) -> None:
    import compiler

    if args.repeat < 1:
        raise SqueezeError(f"--repeat {args.repeat}: time at least one run (--repeat 20, the default)")
    verbs.check_top_k(args.top_k)
    if args.outputs:
        from .atomic import check_writable

        check_writable(args.outputs)
    module = compiler.load(args.artifact, rpc=args.rpc)
    inputs = load_npz(args.inputs, module.input_names)
    outputs = module.run(inputs)
    if args.outputs:
        save_npz(args.outputs, outputs)
    if args.top_k:
        verbs.print_top_k(outputs, args.top_k)
    elif not args.outputs:
        for name, arr in outputs.items():
            print(f"{name}: shape {list(arr.shape)} {arr.dtype}\n{arr}")
    if args.print_time:
        t = module.benchmark(inputs, repeat=args.repeat)
        print(f"latency over {args.repeat} runs: median {t['median_ms']:.3f} ms, "
              f"mean {t['mean_ms']:.3f} ms, std {t['std_ms']:.3f} ms, "
              f"min {t['min_ms']:.3f} ms, max {t['max_ms']:.3f} ms")


def cmd_tune(args) -> None:
    from targets import get_target

    from .api import prepare
    from .tune import tune

    spec = get_target(args.target)
    programs = prepare(args.model, spec, **_compression(args), batch_sizes=args.batch, log=log)
    for batch, program in programs.items():  # each batch gets the whole budget: its kernels differ
        if len(programs) > 1:
            log(f"tuning batch {batch}:")
        db = tune(program, spec, args.tuning_db, args.trials, progress=True, rpc_tracker=args.rpc_tracker,
                  rpc_key=args.rpc_key)
    log(f"tuning records in {db}")


def _check_inspect_flags(args) -> None:
    """``inspect`` options that only apply to one kind of input are errors on the other."""
    artifact = Path(args.path).suffix == ".tar"
    if artifact and args.sensitivity:
        raise SqueezeError("--sensitivity scans an ONNX model, not an artifact: give the .onnx file")
    if not artifact and args.profile:
        raise SqueezeError("--profile times a compiled artifact: compile the model first and inspect the .tar")
    if args.plot and not args.sensitivity:
        raise SqueezeError("--plot draws the --sensitivity scan: add --sensitivity --calib data.npz")
    if (args.calib or args.quantize) and not args.sensitivity:
        raise SqueezeError("--calib and --quantize serve --sensitivity here: add --sensitivity or drop them")


def cmd_inspect(args) -> None:
    from .report import format_table

    _check_inspect_flags(args)
    path = Path(args.path)
    if path.suffix == ".tar":  # per layer: bits, scheme, kernel (and time with --profile); --json, --wide
        from .inspect_artifact import inspect_artifact

        return inspect_artifact(path, args, LAYER_COLUMNS)
    else:
        if args.wide:
            raise SqueezeError("--wide shows the full kernel names of an artifact: inspect the .tar, or drop it")
        verbs.check_json(args.json)
        from .frontend import import_onnx
        from .pipeline import Recipe, run_passes
        from .report import layer_table

        program = run_passes(import_onnx(path, dict(args.input_shape or [])), Recipe.cleanups())
        rows = layer_table(program.mod)
        columns = LAYER_COLUMNS + prune_cli.annotate(rows, prune_cli.weight_sparsity(path, dict(args.input_shape or [])))
        if args.json:
            verbs.write_json(args.json, {"model": str(path), "layers": rows})
        if args.sensitivity:
            print(format_table(rows, LAYER_COLUMNS))
            return _sensitivity(program, args)
    print(format_table(rows, columns))


def _sensitivity(program, args) -> None:
    from .report import format_table
    from .sensitivity import plot_sensitivity, sensitivity

    if not args.calib:
        raise SqueezeError("--sensitivity needs calibration data: add --calib data.npz")
    scheme = args.quantize or "int8"
    results = sensitivity(program, args.calib, scheme, args.observer)
    rows = [{"layer": r.name, "op": r.op, "sqnr_db": round(r.sqnr_db, 2)} for r in results]
    print(f"\nsensitivity ({scheme}, {args.observer}): output SQNR with only that layer quantized")
    print(format_table(sorted(rows, key=lambda r: r["sqnr_db"]), ["layer", "op", "sqnr_db"], totals=False))
    if args.plot:
        plot_sensitivity(results, args.plot, f"{Path(args.path).name}: per-layer {scheme} sensitivity")
        log(f"wrote {args.plot}")


def cmd_targets(_args) -> None:
    from .target_list import target_listing

    print(target_listing(), end="")


def compression_args(c: argparse.ArgumentParser) -> None:
    """The recipe, quantization and pruning options of ``compile`` and ``tune``."""
    c.add_argument("--recipe", help="TOML recipe: [[pass]] list, [prune] and [quantize] tables")
    add_quantization_args(c)
    prune_cli.add_compile_arguments(c)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and a suggestion for a misspelt option."""

    def error(self, message: str):
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            close = difflib.get_close_matches(unknown.group(1).split("=")[0], self._option_strings(), n=1)
            if close:
                message += f": did you mean {close[0]}?"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _option_strings(self) -> list[str]:
        """Every option of this parser and of its subcommands."""
        found = []
        for action in self._actions:
            found += action.option_strings
            if isinstance(action, argparse._SubParsersAction):
                found += [o for sub in action.choices.values() for o in sub._option_strings()]
        return found


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="squeeze", description="Prune, quantize and compile ONNX models with TVM.")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp, model_help="ONNX model"):
        sp.add_argument("model", help=model_help)
        sp.add_argument("--target", help="target name (see `squeeze targets`; default: this host's)")
        sp.add_argument("--input-shape", action="append", type=shape_arg, metavar="NAME:1x3x224x224",
                        help="input shape, also NAME:1,3,224,224 or NAME:[1,3,224,224]: fixes dynamic dims "
                             "and may change a static batch (repeatable)")

    c = sub.add_parser("compile", help="compile an ONNX model into an artifact (.tar)")
    model_args(c)
    c.add_argument("-o", "--output", required=True, help="artifact path (.tar)")
    c.add_argument("--batch", type=batch_arg, metavar="1,8,32",
                   help="batch sizes the artifact holds (one library each, picked by the input's leading dim)")
    c.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials (needs --tuning-db)")
    c.add_argument("--tuning-db", help="tuning database directory, reused by later compiles")
    c.add_argument("--dump-ir", help="directory receiving the IR after each pass")
    compression_args(c)
    c.add_argument_group("storage").add_argument(
        "--compress", metavar="kmeans:16,huffman",
        help="Deep Compression storage: kmeans:K (K in 4..256 shared weights per layer, before quantization), "
             "kmeans:K:per_channel, huffman (weights Huffman-coded beside the library, decoded at load)")
    c.set_defaults(func=cmd_compile)
    prune_cli.add_command(sub, model_args)
    from . import onnx_export

    onnx_export.add_command(sub, model_args)  # squeeze export --format onnx-qdq
    verbs.add_commands(p, sub)  # --version, bench, eval
    from . import html_report, search

    search.add_command(sub, model_args)  # squeeze optimize: mixed precision and pruning search
    html_report.add_command(sub)  # squeeze report: self-contained HTML

    r = sub.add_parser("run", help="run an artifact on inputs from an .npz file")
    r.add_argument("artifact")
    r.add_argument("--inputs", required=True, help=".npz with one array per input name")
    r.add_argument("--outputs", help=".npz receiving the outputs (printed when omitted)")
    r.add_argument("--print-time", action="store_true", help="print median and spread of the latency")
    r.add_argument("--repeat", type=int, default=20, help="timed runs for --print-time")
    r.add_argument("--rpc", help="run on a TVM RPC server at host:port")
    r.add_argument("--top-k", type=int, metavar="K", help="print the K highest scores (class, score) per sample")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("tune", help="tune a model's kernels with MetaSchedule into a database")
    model_args(t)
    t.add_argument("--tuning-db", required=True, help="database directory (created or extended)")
    t.add_argument("--trials", type=int, default=2000, help="global trial budget (per batch size)")
    t.add_argument("--batch", type=batch_arg, metavar="1,8,32", help="batch sizes to tune (as for compile --batch)")
    t.add_argument("--rpc-tracker", metavar="HOST:PORT",
                   help="measure on the boards registered at this TVM RPC tracker (needed for cross targets)")
    t.add_argument("--rpc-key", help="device key the boards registered under (with --rpc-tracker)")
    compression_args(t)
    t.set_defaults(func=cmd_tune)

    i = sub.add_parser("inspect", help="per-layer table of an ONNX model or an artifact")
    i.add_argument("path", help="model.onnx or artifact.tar")
    i.add_argument("--input-shape", action="append", type=shape_arg, metavar="NAME:1x3x224x224")
    i.add_argument("--sensitivity", action="store_true", help="per-layer quantization sensitivity (needs --calib)")
    i.add_argument("--calib", help="calibration data (.npz) for --sensitivity")
    i.add_argument("--quantize", metavar="SCHEME", help="scheme for --sensitivity (default int8)")
    i.add_argument("--observer", default="minmax", help="observer for --sensitivity")
    i.add_argument("--plot", help="write the sensitivity bar chart to this PNG")
    i.add_argument("--profile", action="store_true",
                   help="artifact: run it once and time each kernel (schedule used, us, GOP/s)")
    i.add_argument("--inputs", help="inputs (.npz) for --profile (default: random)")
    i.add_argument("--wide", action="store_true", help="artifact: full kernel and scheme names (cut otherwise)")
    i.add_argument("--json", metavar="OUT.json", help="also write everything shown (per layer, kernels) as JSON")
    i.set_defaults(func=cmd_inspect)

    sub.add_parser("targets", help="list targets and what each accelerates").set_defaults(func=cmd_targets)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "tune_trials", 0) and not getattr(args, "tuning_db", None):
        print("squeeze: error: --tune-trials needs --tuning-db DIR to keep the records", file=sys.stderr)
        return 2
    try:
        args.func(args)
    except SqueezeError as err:
        print(f"squeeze: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("squeeze: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
