"""Labelled validation data: the sensitivity scan can score plans by the pruned model's
cross-entropy on it instead of by its output error on calibration samples."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from compiler.errors import SqueezeError
from compiler.program import TensorSpec
from passes.quantize.calibrate import load_calibration

from .calibration import Batch, Runner

LABELS = "labels"


def load_validation(source: Any, inputs: list[TensorSpec]) -> tuple[list[Batch], np.ndarray]:
    """Batches and class labels from an ``.npz`` path or a dict: one array per model input and
    ``labels`` (an integer class index per sample)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with np.load(source, allow_pickle=False) as data:
                source = {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:
            raise SqueezeError(f"cannot read validation data {source} ({err}): save arrays with numpy.savez") from None
    if not isinstance(source, Mapping) or LABELS not in source:
        raise SqueezeError("validation data lacks 'labels' (a class index per sample): "
                           "give the model's inputs and labels=... in one .npz or dict")
    labels = np.asarray(source[LABELS])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise SqueezeError(f"validation labels must be a 1-D array of class indices, not {labels.dtype} "
                           f"{list(labels.shape)}")
    batches = load_calibration({k: v for k, v in source.items() if k != LABELS}, inputs)
    per_batch = len(labels) // max(len(batches), 1)
    if per_batch * len(batches) != len(labels):
        raise SqueezeError(f"validation data has {len(labels)} labels for {len(batches)} batches of inputs: "
                           "give one label per sample")
    return batches, labels.reshape(len(batches), per_batch)


def cross_entropy(runner: Runner, batches: Sequence[Batch], labels: np.ndarray, params: dict) -> float:
    """Mean cross-entropy of the first watched output (``[batch, classes]`` logits) against ``labels``."""
    total, count = 0.0, 0
    for outs, y in zip(runner.run(batches, params), labels):
        logits = outs[0].astype(np.float64)
        if logits.ndim != 2 or logits.shape[0] != len(y) or y.max() >= logits.shape[1] or y.min() < 0:
            raise SqueezeError(f"validation labels need [batch, classes] logits as the first output, got "
                               f"{list(logits.shape)} for labels up to {int(y.max())}")
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        total -= float(log_probs[np.arange(len(y)), y].sum())
        count += len(y)
    return total / count
