"""What a quantized artifact was compiled from, so that ``squeeze export art.tar`` can write its
QDQ model: the source model and the calibration data by path and SHA-256, the input shapes, the
target and the quantization options.

The files are referred to, not copied: an artifact stays the size of its library (a float
ResNet-18 would double it), and what a user calibrated on may be gigabytes of images. The export
re-runs Squeeze's quantization on the same files, which is deterministic, after checking that
they are unchanged.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .config import ImageFolder, QuantConfig
from .errors import SqueezeError

_OPTIONS = ("scheme", "observer", "skip", "skip_ops", "keep_first_last", "equalize", "bias_correction",
            "observer_options", "adaround", "adaround_iters", "range_search", "smoothquant")


def file_sha(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder_sha(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode() + b"\0" + file_sha(f).encode())
    return digest.hexdigest()


def _arrays_sha(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{a.dtype}:{a.shape}".encode() + a.tobytes())
    return digest.hexdigest()


def _calibration(data) -> dict:
    if isinstance(data, ImageFolder):
        return {"kind": "images", "path": str(Path(data.path).resolve()), "sha256": _folder_sha(data.path),
                "mean": list(data.mean), "std": list(data.std), "grayscale": data.grayscale}
    if isinstance(data, (str, os.PathLike)):
        return {"kind": "npz", "path": str(Path(data).resolve()), "sha256": file_sha(data)}
    if isinstance(data, Mapping):
        return {"kind": "arrays", "sha256": _arrays_sha(data)}
    return {"kind": type(data).__name__}


def record(model, input_shapes: Mapping[str, Sequence[int]] | None, quantize: QuantConfig, target: str,
           pruned: bool, passes: Sequence[str]) -> dict:
    """The manifest's ``source`` entry for a quantized compile (see the module docstring)."""
    is_path = isinstance(model, (str, os.PathLike))
    raw = file_sha(model) if is_path else hashlib.sha256(model.SerializeToString()).hexdigest()
    return {
        "model": {"path": str(Path(model).resolve()) if is_path else None, "sha256": raw},
        "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
        "target": target,
        "quantize": {k: getattr(quantize, k) for k in _OPTIONS},
        "calibration": _calibration(quantize.calibration),
        "pruned": pruned,
        "passes": list(passes),
    }


def replay(source: dict | None, artifact: str, calib: str | None = None):
    """``(model path, QuantConfig, input shapes, target)`` that re-create ``artifact``'s quantization,
    from its ``source`` record; ``calib`` points at the calibration data where it moved. Anything
    that cannot be replayed exactly is one line naming it and the way out."""
    if source is None:
        raise SqueezeError(f"{artifact} records no quantized source (compiled without --quantize, or by an older "
                           "Squeeze): export from the ONNX model (squeeze export model.onnx --calib ...)")
    if source["pruned"] or source["passes"]:
        what = "was pruned" if source["pruned"] else f"ran recipe passes {source['passes']}"
        raise SqueezeError(f"{artifact} {what}, which the onnx-qdq export does not replay: export the pruned or "
                           "rewritten ONNX model (squeeze prune ... -o pruned.onnx), then export that")
    model = source["model"]["path"]
    if model is None:
        raise SqueezeError(f"{artifact} was compiled from an in-memory model: export from the ONNX model")
    if not os.path.isfile(model) or file_sha(model) != source["model"]["sha256"]:
        state = "is missing" if not os.path.isfile(model) else "has changed since"
        raise SqueezeError(f"{artifact} was compiled from {model}, which {state}: export from the ONNX model "
                           "with the same options (squeeze export model.onnx --quantize ... --calib ...)")
    options = {k: tuple(v) if k in ("skip", "skip_ops") else v for k, v in source["quantize"].items()}
    config = QuantConfig(calibration=_calibration_source(source["calibration"], artifact, calib), **options)
    return model, config, source["input_shapes"], source["target"]


def _calibration_source(rec: dict, artifact: str, calib: str | None):
    kind = rec["kind"]
    if kind not in ("npz", "images", "arrays"):
        raise SqueezeError(f"{artifact} was calibrated on a {kind} source, which cannot be checked: export from "
                           "the ONNX model")
    path = calib or rec.get("path")
    if path is None:
        raise SqueezeError(f"{artifact} was calibrated on in-memory arrays: give the same data as --calib data.npz")
    if not os.path.exists(path):
        raise SqueezeError(f"{artifact} was calibrated on {path}, which is missing: give its new place with --calib")
    if kind == "images":
        source = ImageFolder(path, mean=tuple(rec["mean"]), std=tuple(rec["std"]), grayscale=rec["grayscale"])
        sha = _folder_sha(path) if os.path.isdir(path) else None
    else:
        source = path
        sha = file_sha(path) if kind == "npz" else _npz_sha(path)
    if sha != rec["sha256"]:
        raise SqueezeError(f"{path} is not the calibration data {artifact} was made with (its SHA-256 differs): "
                           "give that data with --calib, or export from the ONNX model")
    return source


def _npz_sha(path: str) -> str | None:
    """The arrays' hash of an .npz (for data given to the API as arrays, saved later)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return _arrays_sha({k: data[k] for k in data.files})
    except (OSError, ValueError):
        return None

