"""``squeeze report art.tar|search-dir -o report.html``: one self-contained HTML page.

For an artifact: the compression summary and the per-layer table (precision, kept channels,
sparsity, latency and kernel; ``inspect --profile`` times when the artifact runs here). For a
search directory of ``squeeze optimize``: the same for the chosen model, plus the Pareto plot of
latency against the metric, the per-layer sensitivity bars (SQNR column too) and every candidate.
Plots are matplotlib SVG inlined in the page (text as paths): no script, style sheet, font or
image is fetched from anywhere, so the file opens offline and can be mailed as it is.
"""
from __future__ import annotations

import html
import io
import json
import os
import re
from pathlib import Path

from .errors import SqueezeError

FRONT_COLOR = "#d62728"     # Pareto-front points (the browser test looks for this colour)
HEADER_COLOR = "#1f4e79"    # table headers (likewise)
OTHER_COLOR = "#7f7f7f"

_CSS = f"""
body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 1200px; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 18px; margin-top: 28px; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 8px 0; }}
th {{ background: {HEADER_COLOR}; color: #fff; padding: 4px 8px; text-align: left; }}
td {{ border-bottom: 1px solid #ddd; padding: 3px 8px; }}
tr.chosen td {{ background: #fde9e9; font-weight: bold; }}
.note {{ background: #f4f4f4; border-left: 4px solid {HEADER_COLOR}; padding: 8px 12px; }}
.plot svg {{ max-width: 100%; height: auto; }}
"""


def _esc(v) -> str:
    return html.escape("" if v is None else str(v))


def _table(rows: list[dict], columns: list[str], css_class=None, id_=None) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{css_class(row)}"' if css_class and css_class(row) else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_esc(row.get(c, ''))}</td>" for c in columns) + "</tr>")
    ident = f' id="{id_}"' if id_ else ""
    return f"<table{ident}><tr>{head}</tr>{''.join(body)}</table>"


def _svg(fig) -> str:
    """A matplotlib figure as inline SVG markup (no XML prolog)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.S)  # RDF names, no content


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"
    import matplotlib.pyplot as plt

    return plt


def pareto_svg(records: list[dict], front_keys: list[str], chosen: str | None, metric: str, goal_line: float | None) -> str:
    """Latency (ms) against the metric (%) of every candidate: timed ones solid, modelled ones
    hollow, the Pareto front joined in red, the chosen one ringed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    front = [r for r in records if r["key"] in front_keys]
    timed = [r for r in records if r.get("latency_ms") is not None and r["key"] not in front_keys]
    modelled = [r for r in records if r.get("latency_ms") is None and r.get("estimated_ms") is not None]
    if modelled:
        ax.scatter([r["estimated_ms"] for r in modelled], [100 * r["metric"] for r in modelled], facecolors="none",
                   edgecolors=OTHER_COLOR, s=30, label="modelled (not timed)")
    if timed:
        ax.scatter([r["latency_ms"] for r in timed], [100 * r["metric"] for r in timed], color=OTHER_COLOR, s=30,
                   label="timed")
    if front:
        front = sorted(front, key=lambda r: r["latency_ms"])
        ax.plot([r["latency_ms"] for r in front], [100 * r["metric"] for r in front], "-o", color=FRONT_COLOR,
                markersize=8, linewidth=2, label="Pareto front (timed)")
    pick = next((r for r in records if r["key"] == chosen), None)
    if pick is not None and pick.get("latency_ms") is not None:
        ax.scatter([pick["latency_ms"]], [100 * pick["metric"]], s=260, facecolors="none", edgecolors="black",
                   linewidths=2, label="chosen")
    if goal_line is not None:
        ax.axhline(100 * goal_line, color="#2ca02c", linestyle="--", linewidth=1, label="goal")
    ax.set_xlabel("latency (ms, batch 1, median)")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _svg(fig)


def sensitivity_svg(table: dict[str, dict[str, float]]) -> str:
    """Per layer, one bar per scheme: output SQNR (dB) with only that layer's weights quantized."""
    import numpy as np

    plt = _pyplot()
    from .search import _short

    layers = list(table)
    from passes.quantize.schemes import parse_scheme

    schemes = sorted({s for v in table.values() for s in v}, key=lambda s: -parse_scheme(s).weights.bits)
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(layers) * max(1, len(schemes)) / 1.5 + 1.4))
    height = 0.8 / max(len(schemes), 1)
    colors = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b"]
    for j, scheme in enumerate(schemes):
        values = [min(table[layer].get(scheme, np.nan), 120.0) for layer in layers]
        ax.barh(np.arange(len(layers)) + j * height, values, height=height, color=colors[j % len(colors)],
                label=_short(scheme))
    ax.set_yticks(np.arange(len(layers)) + 0.4 - height / 2, layers, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("output SQNR with only this layer's weights quantized (dB, higher is safer)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _svg(fig)


def _layer_rows(layers: list[dict], sqnr: dict | None, precision: dict[str, str]) -> list[dict]:
    from passes.quantize.schemes import parse_scheme

    from .search import _short

    rows = []
    for row in layers:
        mode = precision.get(row.get("layer", ""))
        scheme = row.get("scheme") or ""
        scans = {parse_scheme(k).name: v for k, v in (sqnr or {}).get(row.get("layer", ""), {}).items()}
        value = scans.get(scheme) if scheme else None  # the scan keys may be aliases (int8)
        rows.append({"layer": row.get("layer", ""), "name": row.get("name", ""), "op": row.get("op", ""),
                     "precision": row.get("bits") or ("float" if mode == "float" else ""),
                     "kept": row.get("kept", ""), "sparsity": row.get("sparsity", ""),
                     "SQNR_dB": "" if value is None else f"{value:.1f}",
                     "latency_us": "" if row.get("us") is None else row["us"],
                     "kernel": row.get("schedule", ""), "kernel_name": (row.get("kernel") or "")[:48],
                     "scheme": _short(scheme) if scheme else ""})
    return rows


LAYER_COLUMNS = ["layer", "name", "op", "precision", "kept", "sparsity", "SQNR_dB", "latency_us", "kernel",
                 "kernel_name"]


def _artifact_layers(path: Path) -> tuple[list[dict], dict, str]:
    """Per-layer rows of an artifact (timed here when it runs here) and its report."""
    from .inspect_artifact import artifact_report
    from .runtime import check_host

    from .artifact import Artifact

    timed = "per-kernel times measured on this machine (inspect --profile)"
    try:
        check_host(Artifact.read(path).manifest)
        report = artifact_report(path, profile=True)
    except SqueezeError:
        report, timed = artifact_report(path), "the artifact does not run on this machine: no times"
    rows, index = [], 0
    for row in report["layers"]:
        if row.get("op") not in ("conv2d", "matmul"):
            continue
        rows.append({**row, "layer": f"{row['op']}_{index}"})
        index += 1
    return rows, report, timed


def _summary(report: dict, extra: list[tuple[str, str]]) -> str:
    storage = report.get("storage") or {}
    prune = report.get("prune") or {}
    quant = report.get("quantization") or {}
    bits: dict[str, int] = {}
    for row in report["layers"]:
        if row.get("op") in ("conv2d", "matmul"):
            bits[row.get("bits", "float")] = bits.get(row.get("bits", "float"), 0) + 1
    items = list(extra) + [("target", (report.get("target") or {}).get("name", "")),
                           ("quantization", quant.get("scheme", "none") if quant else "none"),
                           ("layers by precision", ", ".join(f"{k}: {v}" for k, v in sorted(bits.items())))]
    if prune.get("macs_before"):
        items.append(("pruning (MACs)", f"{prune['macs_before']:,} -> {prune['macs_after']:,} "
                                        f"({prune['macs_before'] / max(prune['macs_after'], 1):.2f}x fewer)"))
    if storage:
        items.append(("weights", f"{storage.get('onnx_weight_bytes', 0):,} B in the ONNX model -> "
                                 f"{storage.get('stored_weight_bytes', 0):,} B stored ({storage.get('ratio', '')}x)"))
    return _table([{"what": k, "value": v} for k, v in items], ["what", "value"], id_="summary")


def build_report(path: str | os.PathLike) -> str:
    """The HTML text for an artifact (``.tar``) or a ``squeeze optimize`` search directory."""
    from .search import CHECKPOINT, choose, pareto_front

    path = Path(path)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Squeeze report: {_esc(path.name)}</title>"
             f"<style>{_CSS}</style></head><body><h1>Squeeze report: {_esc(path.name)}</h1>"]
    if path.is_dir():
        checkpoint = path / CHECKPOINT
        if not checkpoint.is_file():
            raise SqueezeError(f"{path} is not a search directory of squeeze optimize (no {CHECKPOINT}): give it, "
                               "or an artifact .tar")
        try:
            state = json.loads(checkpoint.read_text())
        except ValueError as err:
            raise SqueezeError(f"{checkpoint} is not readable JSON ({err}): give another search directory") from None
        records = state.get("records", [])
        done = [r for r in records if r.get("metric") is not None]
        if not done:
            raise SqueezeError(f"{path}: the search evaluated no candidate yet: run squeeze optimize longer")
        best, _ = choose(records)
        chosen = state.get("chosen") or (best or {}).get("key")
        front = pareto_front(records)
        ident = state.get("identity", {})
        metric = ident.get("metric", "metric")
        base = next((r for r in records if r["key"] == json.dumps({"precision": [], "prune": []})), None)
        pick = next((r for r in records if r["key"] == chosen), best)
        parts.append(f"<p class='note'>{_esc(state.get('note', ''))}</p>")
        extra = [("model", ident.get("model_name", "")), ("goal", ident.get("goal", "")), ("metric", metric),
                 (f"FP32 {metric}", f"{100 * state.get('reference_metric', 0):.2f}%"),
                 (f"chosen {metric}", f"{100 * pick['metric']:.2f}%"),
                 ("chosen latency", f"{pick['latency_ms']:.4f} ms" if pick.get("latency_ms") else "not timed"),
                 ("INT8 latency", f"{base['latency_ms']:.4f} ms" if base and base.get("latency_ms") else "")]
        if base and base.get("latency_ms") and pick.get("latency_ms"):
            extra.append(("speed-up over INT8", f"{base['latency_ms'] / pick['latency_ms']:.2f}x"))
        extra.append(("candidates", f"{len(records)} evaluated, {len(front)} on the Pareto front, "
                                    f"{state.get('elapsed_s', 0):.0f} s"))
        art_rows, report, timed = _artifact_layers(path / pick["artifact"])
        parts.append("<h2>Compression summary</h2>" + _summary(report, extra))
        goal_line = None
        if ident.get("goal", "").startswith("drop"):
            from .search import parse_goal

            goal_line = state.get("reference_metric", 0) - parse_goal(ident["goal"]).bound
        parts.append("<h2>Pareto front: latency against " + _esc(metric) + "</h2><div class='plot' id='pareto'>"
                     + pareto_svg(records, [r["key"] for r in front], chosen, metric, goal_line) + "</div>")
        precision = dict(map(tuple, pick["candidate"]["precision"]))
        parts.append(f"<h2>Per layer (the chosen model; {_esc(timed)})</h2>"
                     + _table(_layer_rows(art_rows, state.get("sensitivity"), precision), LAYER_COLUMNS, id_="layers"))
        if state.get("sensitivity"):
            parts.append("<h2>Sensitivity</h2><div class='plot' id='sensitivity'>"
                         + sensitivity_svg(state["sensitivity"]) + "</div>")
        cands = [{"#": r["index"], "candidate": r["describe"],
                  metric: "" if r.get("metric") is None else f"{100 * r['metric']:.2f}%",
                  "latency_ms": f"{r['latency_ms']:.4f}" if r.get("latency_ms") else
                  (f"~{r['estimated_ms']:.4f} (modelled)" if r.get("estimated_ms") else ""),
                  "size_KB": f"{r['size_bytes'] / 1e3:.0f}" if r.get("size_bytes") else "",
                  "meets goal": "yes" if r.get("meets") else ("failed: " + r["error"][:80] if "error" in r else "no"),
                  "front": "yes" if r in front else "", "key": r["key"]} for r in records]
        parts.append("<h2>Candidates</h2>" + _table(cands, ["#", "candidate", metric, "latency_ms", "size_KB",
                                                            "meets goal", "front"],
                                                    css_class=lambda row: "chosen" if row["key"] == chosen else ""))
    elif path.suffix == ".tar" and path.is_file():
        art_rows, report, timed = _artifact_layers(path)
        proxy = (report.get("accuracy_proxy") or {})
        parts.append("<h2>Compression summary</h2>" + _summary(report, [("artifact", str(path))] + (
            [("accuracy proxy", f"SQNR {proxy.get('sqnr_db')} dB")] if proxy else [])))
        parts.append(f"<h2>Per layer ({_esc(timed)})</h2>" + _table(_layer_rows(art_rows, None, {}), LAYER_COLUMNS,
                                                                      id_="layers"))
        parts.append("<p>Run <code>squeeze optimize</code> and report on its search directory for the Pareto plot "
                     "and the sensitivity bars.</p>")
    else:
        raise SqueezeError(f"report: {path} is neither an artifact (.tar) nor a search directory: give one of them")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write :func:`build_report` of ``path`` to ``out`` atomically."""
    from .atomic import atomic_path

    if Path(out).suffix not in (".html", ".htm"):
        raise SqueezeError(f"-o {out}: the report is an HTML file, name it e.g. report.html")
    text = build_report(path)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(out)


def cmd_report(args) -> None:
    from .cli_args import log

    out = write_report(args.path, args.output)
    log(f"wrote {out} ({out.stat().st_size / 1e3:.0f} KB, self-contained)")


def add_command(sub) -> None:
    r = sub.add_parser("report", help="self-contained HTML report of an artifact or a squeeze optimize search")
    r.add_argument("path", help="artifact (.tar) or search directory")
    r.add_argument("-o", "--output", required=True, help="HTML file to write")
    r.set_defaults(func=cmd_report)

