"""Mixed precision: per-layer quantization sensitivity (one layer quantized at a time)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm

from passes.quantize import realize_module
from passes.quantize.calibrate import CalibrationSource, load_calibration
from passes.quantize.schemes import parse_scheme

from .calibration import calibrated_ranges
from .frontend import layer_calls
from .hostexec import host_vm
from .ir import layer_names
from .program import Program
from .progress import track


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    noise = float(np.sum((reference.astype(np.float64) - approx) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


@dataclass(frozen=True)
class Sensitivity:
    """Output SQNR with only one layer quantized."""

    index: int
    name: str
    op: str
    sqnr_db: float


def sensitivity(program: Program, calibration: CalibrationSource, scheme: str = "int8",
                observer: str = "minmax", samples: int = 16, progress: bool = True) -> list[Sensitivity]:
    """Quantize each conv/matmul layer alone and measure the model output's SQNR.

    Parameters
    ----------
    program : Program
        Weights bound, clean-ups applied.
    calibration : calibration source
        Used for the ranges; its first ``samples`` batches also measure the SQNR.
    """
    parsed = parse_scheme(scheme)
    ranges, _ = calibrated_ranges(program.mod, parsed, calibration, observer, progress)
    batches = load_calibration(calibration, program.inputs)[:samples]

    def outputs(mod):
        vm = host_vm(program.with_mod(mod))
        return [vm["main"](*(tvm.runtime.tensor(b[s.name]) for s in program.inputs)).numpy() for b in batches]

    reference = np.concatenate([o.ravel() for o in outputs(program.mod)])
    layers = layer_calls(program.mod["main"])
    names = layer_names(program.mod["main"])
    results = []
    for i in track(range(len(layers)), "sensitivity (layers)", enabled=progress):
        mod = realize_module(program.mod, parsed, ranges, lambda idx, _call, i=i: "" if idx == i else "scan", None,
                             observer)
        approx = np.concatenate([o.ravel() for o in outputs(mod)])
        op = "conv2d" if layers[i].value.op.name == "relax.nn.conv2d" else "matmul"
        results.append(Sensitivity(i, names[i] if i < len(names) else f"{op}_{i}", op, sqnr_db(reference, approx)))
    return results


def plot_sensitivity(results: list[Sensitivity], path, title: str) -> None:
    """Horizontal bar chart of per-layer SQNR (lower = more sensitive), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_path

    order = sorted(results, key=lambda r: r.sqnr_db)  # the table's order: most sensitive first
    values = np.array([r.sqnr_db for r in order], dtype=np.float64)
    finite = values[np.isfinite(values)]
    top = float(finite.max()) + 3.0 if finite.size else 60.0
    values = np.where(np.isfinite(values), values, top)  # exact layers drawn at the right edge
    median = float(np.median(values))
    names = [r.name for r in order]
    fig, ax = plt.subplots(figsize=(6 + 0.055 * max(map(len, names), default=0), 0.3 * len(order) + 1.6))
    colors = ["#d62728" if v < median else "#1f77b4" for v in values]
    ax.barh(range(len(order)), values, color=colors)
    ax.set_yticks(range(len(order)), names, fontsize=7)
    ax.invert_yaxis()
    low = float(values.min()) if values.size else 0.0
    ax.set_xlim(max(0.0, low - 0.25 * (top - low) - 1.0), top + 0.5)  # a narrow spread stays visible
    ax.set_xlabel("output SQNR with only this layer quantized (dB, higher is safer)")
    ax.set_title(title)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="#d62728", label="below the median: most sensitive"),
                       Patch(color="#1f77b4", label="at or above the median")], loc="upper center",
              bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=7, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
