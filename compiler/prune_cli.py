"""The pruning parts of the ``squeeze`` command: ``compile --prune``, ``prune`` and ``inspect`` columns.

TVM loads only when a command runs, so that ``squeeze --help`` starts quickly.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .cli_args import add_calibration_args, calibration_source, log
from .errors import SqueezeError

if TYPE_CHECKING:
    from passes.prune.config import PruneConfig

PRUNE_COLUMNS = ["kept", "inputs", "sparsity"]


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    """``squeeze compile --prune SPEC`` (calibration comes from ``--calib``)."""
    g = parser.add_argument_group("pruning")
    g.add_argument("--prune", metavar="GRANULARITY:RATIO[,key=value]",
                   help="e.g. filter:0.5, filter:0.5,criterion=fpgm,round_to=8, channel:sensitivity,macs=0.5, "
                        "filter:sensitivity,macs=0.5,validation=val.npz,search=4, "
                        "nm:2:4, block:0.8,block=1x16, element:0.7")


def compile_config(args: argparse.Namespace, data=None) -> PruneConfig | None:
    """The PruneConfig of ``squeeze compile`` (None without ``--prune``); ``data``: ``--calib``."""
    from passes.prune.config import PruneConfig

    return PruneConfig.parse(args.prune, calibration=data) if args.prune else None


def add_command(sub, model_args) -> None:
    """Register ``squeeze prune``."""
    p = sub.add_parser("prune", help="prune channels (or sparsify) and write the pruned ONNX model")
    model_args(p)
    p.add_argument("-o", "--output", required=True, help="pruned model path (.onnx)")
    p.add_argument("--ratio", default="0.5",
                   help="fraction removed in [0, 1), or 'sensitivity' for per-layer ratios meeting --macs")
    p.add_argument("--granularity", default="filter", help="filter, channel, nm, block or element")
    p.add_argument("--criterion", default="l1", help="l1, l2, fpgm, bn_scale, apoz, variance, reconstruction, random")
    p.add_argument("--layer-ratio", action="append", default=[], metavar="PATTERN=RATIO",
                   help="ratio for groups matching PATTERN (fnmatch on node or weight names); repeatable")
    p.add_argument("--round-to", type=int, default=1, help="kept channel counts are multiples of this")
    p.add_argument("--macs", type=float, default=0.5, help="MAC fraction to remove with --ratio sensitivity")
    p.add_argument("--validation", help="labelled .npz (inputs + labels) scoring --ratio sensitivity by cross-entropy")
    p.add_argument("--search-steps", type=int, default=0,
                   help="local-search moves trading channels between groups after --ratio sensitivity")
    p.add_argument("--nm", default="2:4", help="N:M pattern for --granularity nm")
    p.add_argument("--block", default="1x16", help="block shape (rows x columns) for --granularity block")
    add_calibration_args(p)
    p.add_argument("--no-reconstruct", action="store_true", help="skip the least-squares re-fit")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> None:
    from passes.prune.config import PruneConfig
    from passes.prune.pruner import prune_model

    from . import build as _build  # noqa: F401  (registers the host builder pruning runs with)
    from .atomic import atomic_path, check_writable
    from .report import format_table

    check_writable(args.output)
    ratio = args.ratio if args.ratio == "sensitivity" else _ratio(args.ratio)
    if args.layer_ratio:
        ratio = {**({"*": ratio} if not isinstance(ratio, str) and ratio > 0 else {}), **_layer_ratios(args.layer_ratio)}
    text = f"{args.granularity}:{args.nm}" if args.granularity == "nm" else args.granularity
    config = PruneConfig.parse(text, ratio=ratio, criterion=args.criterion, round_to=args.round_to,
                               macs_target=args.macs, validation=args.validation, search_steps=args.search_steps,
                               block=_block(args.block), calibration=calibration_source(args),
                               reconstruct=False if args.no_reconstruct else None, seed=args.seed)
    result = prune_model(args.model, config, dict(args.input_shape or []), log=log)
    import onnx

    with atomic_path(args.output) as tmp:
        onnx.save(result.onnx, tmp)
    s = result.summary
    if "groups" in s:
        print(format_table(s["groups"], ["name", "kept", "size"], totals=False))
        print(f"MACs {s['macs_before']:,} -> {s['macs_after']:,} ({s['macs_before'] / max(s['macs_after'], 1):.2f}x fewer)")
        for b in s["barriers"]:
            print(f"kept whole (no pruning rule): {b['node']} ({b['reason']})")
    else:
        rows = [{**r, "sparsity": f"{100 * r['sparsity']:.1f}%"} for r in s["layers"] if "sparsity" in r]
        print(format_table(rows, ["name", "sparsity", "dense_bytes", "sparse_bytes"]))
    log(f"wrote {args.output}")


def annotate(rows: list[dict], summary: dict | None) -> list[str]:
    """Add pruning columns (kept output/input channels, weight sparsity) to layer-table rows
    from a manifest's ``prune`` summary; returns the names of the columns added."""
    if not summary:
        return []
    by_name = {r["name"]: r for r in summary.get("layers", [])}
    shown = {row["name"] for row in rows}
    if summary.get("granularity") == "block":  # layers now run by the BSR kernel (no conv/matmul row)
        rows.extend({"name": name, "op": "bsr kernel"} for name, info in by_name.items()
                    if name not in shown and "sparsity" in info)
    for row in rows:
        info = by_name.get(row["name"])
        if info is None:
            continue
        if "out_channels" in info:
            row["kept"] = "/".join(map(str, info["out_channels"]))
            row["inputs"] = "/".join(map(str, info["in_channels"]))
        if "sparsity" in info:
            row["sparsity"] = f"{100 * info['sparsity']:.1f}%"
    return [c for c in PRUNE_COLUMNS if any(c in row for row in rows)]


def weight_sparsity(model, input_shapes: dict) -> dict:
    """``{"layers": [{"name", "sparsity"}]}``: fraction of zero weights of each conv/matmul."""
    from passes.prune.pruner import analyze

    _, program, graph, _ = analyze(model, input_shapes)
    return {"layers": [{"name": layer.name, "sparsity": round(float((program.params[layer.weight] == 0).mean()), 4)}
                       for layer in graph.layers]}


def _ratio(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SqueezeError(f"--ratio '{text}' is not a number: give a fraction in [0, 1) or 'sensitivity'") from None


def _layer_ratios(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        pattern, sep, value = item.rpartition("=")
        if not sep or not pattern:
            raise SqueezeError(f"--layer-ratio '{item}' is not PATTERN=RATIO")
        out[pattern] = _ratio(value)
    return out


def _block(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SqueezeError(f"--block '{text}' is not ROWSxCOLUMNS, e.g. 1x16") from None
    return a, b
