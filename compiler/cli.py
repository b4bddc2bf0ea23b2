"""The ``squeeze`` command: compile | run | tune | inspect | targets (tvmc-style)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import prune_cli
from .cli_args import add_calibration_args, calibration_source, log, shape_arg
from .errors import SqueezeError

LAYER_COLUMNS = ["name", "op", "input", "output", "dtype", "macs", "param_bytes"]


def _load_npz(path: str, names: list[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise SqueezeError(f"inputs file not found: {path}") from None
    except (OSError, ValueError) as err:
        raise SqueezeError(f"{path} is not a readable .npz file ({err}): save inputs with numpy.savez") from None
    if len(names) == 1 and len(arrays) == 1:  # a lone array may go by any key
        return {names[0]: next(iter(arrays.values()))}
    return arrays


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _quant_config(args):
    """``--quantize int8[:scheme]`` and its companions as a QuantConfig (None without --quantize)."""
    if not args.quantize:
        return None
    from .config import QuantConfig

    if not args.calib:
        raise SqueezeError("--quantize needs calibration data: add --calib data.npz (or a folder of images)")
    _, _, scheme = args.quantize.partition(":")
    return QuantConfig(
        scheme=scheme or args.quantize, calibration=calibration_source(args), observer=args.observer,
        skip=[s for s in (args.skip or "").split(",") if s], skip_ops=args.skip_op or [],
        keep_first_last=args.keep_first_last, equalize=args.equalize, bias_correction=args.bias_correction,
    )


def cmd_compile(args) -> None:
    import compiler

    from .atomic import check_writable

    check_writable(args.output)
    art = compiler.compile(
        args.model,
        args.target,
        input_shapes=dict(args.input_shape or []),
        recipe=args.recipe,
        quantize=_quant_config(args),
        prune=prune_cli.compile_config(args),
        tune_trials=args.tune_trials,
        tuning_db=args.tuning_db,
        dump_ir=args.dump_ir,
        log=log,
    )
    out = art.save(args.output)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, target {art.manifest.target['name']})")


def cmd_run(args) -> None:
    import compiler

    if args.outputs:
        from .atomic import check_writable

        check_writable(args.outputs)
    module = compiler.load(args.artifact, rpc=args.rpc)
    inputs = _load_npz(args.inputs, module.input_names)
    outputs = module.run(inputs)
    if args.outputs:
        _save_npz(args.outputs, outputs)
    else:
        for name, arr in outputs.items():
            print(f"{name}: shape {list(arr.shape)} {arr.dtype}\n{arr}")
    if args.print_time:
        t = module.benchmark(inputs, repeat=args.repeat)
        print(f"latency over {args.repeat} runs: median {t['median_ms']:.3f} ms, "
              f"mean {t['mean_ms']:.3f} ms, std {t['std_ms']:.3f} ms, "
              f"min {t['min_ms']:.3f} ms, max {t['max_ms']:.3f} ms")


def cmd_tune(args) -> None:
    from targets import get_target, host_target

    from .frontend import import_onnx
    from .pipeline import Recipe, run_passes
    from .tune import tune

    spec = get_target(args.target) if args.target else host_target()
    program = run_passes(import_onnx(args.model, dict(args.input_shape or [])), Recipe.cleanups())
    db = tune(program, spec, args.tuning_db, args.trials, progress=True, rpc_tracker=args.rpc_tracker,
              rpc_key=args.rpc_key)
    log(f"tuning records in {db}")


def cmd_inspect(args) -> None:
    from .report import format_table

    path = Path(args.path)
    if path.suffix == ".tar":
        from .artifact import Artifact

        manifest = Artifact.read(path).manifest
        print(f"artifact {path}: target {manifest.target['name']}, "
              f"squeeze {manifest.versions.get('squeeze')}, tvm {manifest.versions.get('tvm')}")
        for kind, specs in (("input", manifest.inputs), ("output", manifest.outputs)):
            for s in specs:
                print(f"  {kind} {s.name}: {'x'.join(map(str, s.shape))} {s.dtype}")
        rows = manifest.summary.get("layers", [])
        columns = LAYER_COLUMNS + prune_cli.annotate(rows, manifest.summary.get("prune"))
        if args.profile:
            print(format_table(rows, columns))
            return _profile(path, args)
    else:
        from .frontend import import_onnx
        from .pipeline import Recipe, run_passes
        from .report import layer_table

        program = run_passes(import_onnx(path, dict(args.input_shape or [])), Recipe.cleanups())
        rows = layer_table(program.mod)
        columns = LAYER_COLUMNS + prune_cli.annotate(rows, prune_cli.weight_sparsity(path, dict(args.input_shape or [])))
        if args.sensitivity:
            print(format_table(rows, LAYER_COLUMNS))
            return _sensitivity(program, args)
    print(format_table(rows, columns))


def _profile(path: Path, args) -> None:
    """Per-kernel table of one run of an artifact: schedule used, measured time, GOP/s."""
    import compiler

    from .report import format_table

    module = compiler.load(path)
    inputs = _load_npz(args.inputs, module.input_names) if args.inputs else None
    rows = module.profile(inputs)
    for r in rows:
        r["kernel"] = r["kernel"] if len(r["kernel"]) <= 60 else r["kernel"][:57] + "..."
    total_us = sum(r["us"] for r in rows)
    ops = sum(r["gops"] * r["us"] * 1e3 for r in rows if r["gops"])
    print(f"\nkernels of one run ({'random' if inputs is None else args.inputs} inputs): {total_us / 1e3:.3f} ms, "
          f"{ops / total_us / 1e3:.0f} GOP/s overall")
    print(format_table(rows, ["kernel", "schedule", "us", "gops", "share"], totals=False))


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
    from targets import get_target, target_names

    for name in target_names():
        spec = get_target(name)
        print(f"{name:10s} {spec.description}")
        print(f"{'':10s} target: {spec.target}")
        ops = ", ".join(map(str, spec.accelerates)) or "none (generic TVM lowering)"
        print(f"{'':10s} accelerates: {ops}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="squeeze", description="Prune, quantize and compile ONNX models with TVM.")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp, model_help="ONNX model"):
        sp.add_argument("model", help=model_help)
        sp.add_argument("--target", help="target name (see `squeeze targets`; default: this host's)")
        sp.add_argument("--input-shape", action="append", type=shape_arg, metavar="NAME:1x3x224x224",
                        help="static shape for a dynamic input (repeatable)")

    c = sub.add_parser("compile", help="compile an ONNX model into an artifact (.tar)")
    model_args(c)
    c.add_argument("-o", "--output", required=True, help="artifact path (.tar)")
    c.add_argument("--recipe", help="TOML recipe of passes to run after the clean-ups")
    c.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials (needs --tuning-db)")
    c.add_argument("--tuning-db", help="tuning database directory, reused by later compiles")
    c.add_argument("--dump-ir", help="directory receiving the IR after each pass")
    q = c.add_argument_group("quantization")
    q.add_argument("--quantize", metavar="int8[:SCHEME]", help="post-training quantization scheme or alias")
    add_calibration_args(q)
    q.add_argument("--observer", default="minmax", help="minmax, moving_average, percentile, entropy, mse")
    q.add_argument("--skip", help="comma-separated layers kept float (ONNX node names or conv2d_N)")
    q.add_argument("--skip-op", action="append", choices=["conv2d", "matmul"], help="op type kept float")
    q.add_argument("--keep-first-last", action="store_true", help="keep the first and last layers float")
    q.add_argument("--equalize", action="store_true", help="cross-layer equalization before quantizing")
    q.add_argument("--bias-correction", action="store_true", help="correct the quantization bias shift")
    prune_cli.add_compile_arguments(c)
    c.set_defaults(func=cmd_compile)
    prune_cli.add_command(sub, model_args)

    r = sub.add_parser("run", help="run an artifact on inputs from an .npz file")
    r.add_argument("artifact")
    r.add_argument("--inputs", required=True, help=".npz with one array per input name")
    r.add_argument("--outputs", help=".npz receiving the outputs (printed when omitted)")
    r.add_argument("--print-time", action="store_true", help="print median and spread of the latency")
    r.add_argument("--repeat", type=int, default=20, help="timed runs for --print-time")
    r.add_argument("--rpc", help="run on a TVM RPC server at host:port")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("tune", help="tune a model's kernels with MetaSchedule into a database")
    model_args(t)
    t.add_argument("--tuning-db", required=True, help="database directory (created or extended)")
    t.add_argument("--trials", type=int, default=2000, help="global trial budget")
    t.add_argument("--rpc-tracker", metavar="HOST:PORT",
                   help="measure on the boards registered at this TVM RPC tracker (needed for cross targets)")
    t.add_argument("--rpc-key", help="device key the boards registered under (with --rpc-tracker)")
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
