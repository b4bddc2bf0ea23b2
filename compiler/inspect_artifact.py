"""``squeeze inspect art.tar``: per layer its ONNX name, bits, scheme and kernel, times with
``--profile``, everything as JSON with ``--json``.

The manifest's summary holds the layer table (``layers``), the quantizer's per-layer decisions
(``quantization``: scheme, observer, one record per conv/matmul in order) and the compiled
kernels (``kernels``: PrimFunc name -> schedule and 2·MACs). A layer is tied to the kernel that
computes it through the call sequence of ``main`` (the VM's bytecode, or the profiled run): each
conv/matmul row takes the next unclaimed call whose arithmetic equals its MACs, and layers left
over (sparse kernels, whose MACs count non-zeros) take the remaining contraction calls in order.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from .errors import SqueezeError

KERNEL_CUT = 60  # characters of a kernel name shown without --wide
_CONTRACTIONS = ("conv2d", "matmul", "bsr kernel")
_NO_LAYER = ("schedule_elementwise", "schedule_pool", "unscheduled")


def scheme_info(quant: dict | None) -> dict | None:
    """Scheme name, its alias, observer and bits of a manifest's ``quantization`` record."""
    if not quant:
        return None
    from passes.quantize.schemes import ALIASES

    scheme = quant.get("scheme", "")
    alias = next((a for a, full in ALIASES.items() if full == scheme), None)
    w, a = layer_bits(scheme)
    return {"scheme": scheme, "alias": alias, "observer": quant.get("observer"), "weight_bits": w,
            "activation_bits": a, "integer_only": scheme.endswith("__fixed_point")}


def layer_bits(mode: str) -> tuple[int | None, int | None]:
    """Weight and activation bits of a layer mode (a scheme name, ``qdq_uint8×int4`` or ``float``)."""
    m = re.match(r"w(\d+)_.*__a(\d+)_", mode)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = re.match(r"qdq_u?int(\d+)×int(\d+)", mode)
    if m:
        return int(m.group(2)), int(m.group(1))
    return None, None


def _short_scheme(mode: str) -> str:
    from passes.quantize.schemes import ALIASES

    return next((a for a, full in ALIASES.items() if full == mode), mode)


def call_sequence(library: bytes) -> list[str] | None:
    """Names of the functions ``main`` calls, in order (None if this host cannot load the library)."""
    import tvm
    from tvm import relax

    with tempfile.TemporaryDirectory(prefix="squeeze-inspect-") as tmp:
        path = os.path.join(tmp, "lib.so")
        Path(path).write_bytes(library)
        try:
            text = relax.VMExecutable(tvm.runtime.load_module(path)).as_text()
        except Exception:  # noqa: BLE001  (another architecture, or an older executable format)
            return None
    body = text.split("@main:", 1)[-1].split("\n@", 1)[0]
    return re.findall(r"^\s*call\s+(\S+)\s+in:", body, re.M)


def tie_kernels(rows: list[dict], kernels: dict[str, dict], calls: list[str]) -> list[int | None]:
    """Index into ``calls`` of the kernel computing each row (None for rows without one)."""
    sites = [i for i, name in enumerate(calls) if name in kernels and kernels[name]["kernel"] not in _NO_LAYER
             and kernels[name].get("ops")]
    claimed: set[int] = set()
    tied: list[int | None] = [None] * len(rows)
    for r, row in enumerate(rows):
        if row.get("op") in _CONTRACTIONS and row.get("macs"):
            site = next((i for i in sites if i not in claimed and kernels[calls[i]]["ops"] == 2 * row["macs"]), None)
            if site is not None:
                tied[r] = site
                claimed.add(site)
    for r, row in enumerate(rows):  # sparse kernels and the like: by order
        if tied[r] is None and row.get("op") in _CONTRACTIONS:
            after = max((t for t in tied[:r] if t is not None), default=-1)
            site = next((i for i in sites if i not in claimed and i > after), None)
            if site is not None:
                tied[r] = site
                claimed.add(site)
    return tied


def _cut(name: str, wide: bool) -> str:
    return name if wide or len(name) <= KERNEL_CUT else name[:KERNEL_CUT - 3] + "..."


def artifact_report(path: str | os.PathLike, profile: bool = False, inputs: dict | None = None) -> dict:
    """Everything ``inspect`` knows of an artifact, as plain data (what ``--json`` writes)."""
    from .artifact import Artifact
    from .prune_cli import annotate
    from .verbs import builds

    artifact = Artifact.read(path)
    manifest = artifact.manifest
    summary = manifest.summary
    rows = [dict(r) for r in summary.get("layers", [])]
    prune_columns = annotate(rows, summary.get("prune"))
    quant = summary.get("quantization")
    records = {rec["index"]: rec for rec in (quant or {}).get("layers", [])}
    index = 0
    for row in rows:
        if row.get("op") not in ("conv2d", "matmul"):
            continue
        rec = records.get(index, {"mode": "float", "reason": ""})
        index += 1
        w, a = layer_bits(rec["mode"])
        row["bits"] = f"w{w}a{a}" if w else "float"
        row["scheme"] = rec["mode"] if w else ""
        if rec.get("reason"):
            row["reason"] = rec["reason"]
    kernels = summary.get("kernels", {})
    profile_rows = None
    if profile:
        import compiler

        profile_rows = compiler.load(path).profile(inputs)
        calls = [r["kernel"] for r in profile_rows]
    else:
        calls = call_sequence(artifact.library)
        if calls is None:  # not loadable here: the kernels' name order approximates the call order
            calls = sorted(kernels, key=_natural)
    for row, site in zip(rows, tie_kernels(rows, kernels, calls)):
        if site is None:
            continue
        row["kernel"] = calls[site]
        row["schedule"] = kernels[calls[site]]["kernel"]
        if "weight_bytes" in kernels[calls[site]]:
            row["stored_bytes"] = kernels[calls[site]]["weight_bytes"]
        if profile_rows is not None:
            row["us"] = profile_rows[site]["us"]
            profile_rows[site]["layer"] = row["name"]
    return {
        "artifact": str(path),
        "target": manifest.target,
        "versions": manifest.versions,
        "inputs": [s.to_json() for s in manifest.inputs],
        "outputs": [s.to_json() for s in manifest.outputs],
        "batches": list(builds(manifest)),
        "quantization": scheme_info(quant),
        "float_islands": summary.get("float_islands"),
        "int8_io_float_ops": summary.get("int8_io_float_ops"),
        "prune": summary.get("prune"),
        "prune_columns": prune_columns,
        "storage": summary.get("storage"),
        "layers": rows,
        "kernels": [{"name": name, **info} for name, info in kernels.items()],
        "profile": profile_rows,
    }


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def header(report: dict) -> list[str]:
    """The lines above the layer table: target, versions, tensors, quantization."""
    m = report
    lines = [f"artifact {m['artifact']}: target {m['target']['name']}, squeeze {m['versions'].get('squeeze')}, "
             f"tvm {m['versions'].get('tvm')}"]
    for kind in ("inputs", "outputs"):
        for s in m[kind]:
            lines.append(f"  {kind[:-1]} {s['name']}: {'x'.join(map(str, s['shape']))} {s['dtype']}")
    if len(m["batches"]) > 1:
        lines.append(f"  batches: {', '.join(map(str, m['batches']))} (one library each; tables of batch {m['batches'][0]})")
    if m.get("storage"):
        from .compress import storage_line

        lines.append(f"  {storage_line(m['storage'])}")
    q = m["quantization"]
    layers = [r for r in m["layers"] if "bits" in r]
    if q is None:
        lines.append("  quantization: none (float32)")
    else:
        integer = sum(r["bits"] != "float" for r in layers)
        bits = (f"{q['weight_bits']}-bit weights, {q['activation_bits']}-bit activations"
                if q["weight_bits"] else "from the model's Q/DQ nodes")
        name = f"{q['alias']} = {q['scheme']}" if q["alias"] else q["scheme"]
        lines.append(f"  quantization: {name} ({bits}"
                     f"{', fixed-point requantization' if q['integer_only'] else ''}), observer {q['observer']}, "
                     f"{integer} of {len(layers)} layers integer")
        if m.get("float_islands") is not None:
            lines.append(f"  float islands (float ops between dequantize and quantize): {_counts(m['float_islands'])}")
        if m.get("int8_io_float_ops"):
            lines.append(f"  float ops with integer inputs and outputs: {_counts(m['int8_io_float_ops'])}")
    return lines


def _counts(ops: dict[str, int]) -> str:
    return ", ".join(f"{op.removeprefix('relax.')} ×{n}" for op, n in sorted(ops.items())) or "none"


def print_report(report: dict, wide: bool, layer_columns: list[str]) -> None:
    from .report import format_table

    for line in header(report):
        print(line)
    rows = []
    for r in report["layers"]:
        row = dict(r)
        if row.get("scheme"):
            row["scheme"] = row["scheme"] if wide else _short_scheme(row["scheme"])
        elif row.get("reason"):
            row["scheme"] = f"({row['reason']})"
        if "kernel" in row:
            row["kernel"] = _cut(row["kernel"], wide)
        rows.append(row)
    extra = [c for c in ("stored_bytes", "bits", "scheme", "schedule", "us", "kernel") if any(c in r for r in rows)]
    print(format_table(rows, layer_columns + report["prune_columns"] + extra))
    if report["profile"] is not None:
        prof = report["profile"]
        total_us = sum(r["us"] for r in prof)
        ops = sum(r["gops"] * r["us"] * 1e3 for r in prof if r["gops"])
        print(f"\nkernels of one run ({report.get('profile_inputs', 'random')} inputs): {total_us / 1e3:.3f} ms, "
              f"{ops / max(total_us, 1e-9) / 1e3:.0f} GOP/s overall")
        shown = [{**r, "kernel": _cut(r["kernel"], wide)} for r in prof]
        print(format_table(shown, ["kernel", "layer", "schedule", "us", "gops", "share"], totals=False))


def inspect_artifact(path: Path, args, layer_columns: list[str]) -> None:
    """``squeeze inspect art.tar [--profile [--inputs x.npz]] [--wide] [--json out.json]``."""
    from .verbs import check_json, write_json

    json_path = getattr(args, "json", None)
    check_json(json_path)
    inputs = None
    if args.profile and args.inputs:
        from .artifact import Artifact
        from .cli_args import load_npz

        inputs = load_npz(args.inputs, [s.name for s in Artifact.read(path).manifest.inputs])
    elif args.inputs:
        raise SqueezeError("--inputs feeds --profile: add --profile or drop --inputs")
    report = artifact_report(path, args.profile, inputs)
    if report["profile"] is not None:
        report["profile_inputs"] = args.inputs or "random"
    print_report(report, getattr(args, "wide", False), layer_columns)
    if json_path:
        from .cli_args import log

        write_json(json_path, report)
        log(f"wrote {json_path}")
