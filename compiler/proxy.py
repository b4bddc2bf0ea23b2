"""The accuracy proxy every compressing compile prints: the compiled model against the FP32
ONNX model (run by ONNX Runtime) on a few calibration samples.

A compressed model can be broken without any error (pruning without a re-fit, a bad scale):
this one line says so before the user deploys it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import onnx

from passes.quantize.calibrate import CalibrationSource, load_calibration

from .program import TensorSpec
from .sensitivity import sqnr_db

SAMPLES = 8
POOR_SQNR_DB = 20.0  # below this, or below POOR_AGREEMENT, the compile warns
POOR_AGREEMENT = 0.9


def accuracy_proxy(run: Callable[[dict], dict], model: onnx.ModelProto, inputs: Sequence[TensorSpec],
                   calibration: CalibrationSource, log: Callable[[str], None] | None = None) -> dict | None:
    """Output SQNR (and top-1 agreement for ``[N, classes]`` outputs) of the compiled model
    (``run``: ``{input: array} -> {output: array}``, e.g. ``Module.run``) against ``model`` in
    ONNX Runtime, on the first :data:`SAMPLES` calibration batches shaped like ``inputs``
    (None, with a line saying why, when ONNX Runtime cannot run the model on them)."""
    import onnxruntime as ort

    batches = load_calibration(calibration, list(inputs))[:SAMPLES]
    got, want = [], []
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        for batch in batches:
            want.append(session.run(None, {s.name: batch[s.name] for s in inputs})[0])
    except Exception as err:  # onnxruntime raises its own exception types
        if log is not None:
            log(f"accuracy check against FP32 skipped: ONNX Runtime cannot run the source model on these inputs "
                f"({str(err).splitlines()[0][:120]})")
        return None
    for batch in batches:
        got.append(next(iter(run(batch).values())))
    got, want = np.concatenate(got), np.concatenate(want).astype(got[0].dtype if got else np.float32)
    sqnr = float(sqnr_db(want, got))
    result = {"samples": len(batches), "sqnr_db": round(sqnr, 2) if np.isfinite(sqnr) else None}  # None: exact
    if want.ndim == 2 and want.shape[1] > 1:
        result["top1_agreement"] = round(float((want.argmax(1) == got.argmax(1)).mean()), 4)
    poor = bool(sqnr < POOR_SQNR_DB or result.get("top1_agreement", 1.0) < POOR_AGREEMENT)
    if log is not None:
        agreement = (f", top-1 agreement {100 * result['top1_agreement']:.1f} %"
                     if "top1_agreement" in result else "")
        log(f"{'warning: poor accuracy: ' if poor else ''}vs FP32 (ONNX Runtime) on {len(batches)} calibration "
            f"samples: output SQNR {sqnr:.1f} dB{agreement}"
            + (": check the calibration data and the compression settings" if poor else ""))
    result["poor"] = poor
    return result
