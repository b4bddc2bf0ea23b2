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
    from tqdm import tqdm

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
    for i in tqdm(range(len(layers)), desc="sensitivity", unit="layer", disable=not progress, leave=False):
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

    finite = [r.sqnr_db if np.isfinite(r.sqnr_db) else 99.0 for r in results]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(results) + 1.5))
    ax.barh(range(len(results)), finite, color=["#d62728" if v < np.median(finite) else "#1f77b4" for v in finite])
    ax.set_yticks(range(len(results)), [r.name[-40:] for r in results], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("output SQNR with only this layer quantized (dB, higher is safer)")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
