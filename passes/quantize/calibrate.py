"""Calibration data and the instrumented model: what calibration observes and how it is fed.

Running the instrumented model is the driver's step (``compiler.calibration``); this module
only loads and validates data and rewrites the IR so ``main`` returns the observed tensors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

import numpy as np
import tvm
from tvm import relax

from compiler.errors import SqueezeError
from compiler.ir import user_inputs, with_main
from compiler.program import TensorSpec


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class ImageFolder:
    """A folder of images with a declared preprocessing (resize, scale to [0,1], normalize, NCHW).

    Parameters
    ----------
    path : path
        Folder holding .png/.jpg/.bmp files (sorted by name).
    mean, std : sequence of float
        Per-channel normalization applied after scaling pixels to [0, 1].
    grayscale : bool
        Convert to one channel instead of RGB.
    """

    path: Union[str, os.PathLike]
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    grayscale: bool = False

    def load(self, spec: TensorSpec) -> np.ndarray:
        from PIL import Image

        files = sorted(p for p in Path(self.path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        _, _, height, width = spec.shape
        images = []
        for f in files:
            img = Image.open(f).convert("L" if self.grayscale else "RGB").resize((width, height), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32).reshape(height, width, -1) / 255.0
            arr = (arr - np.asarray(self.mean, np.float32)[: arr.shape[2]]) / np.asarray(self.std, np.float32)[: arr.shape[2]]
            images.append(arr.transpose(2, 0, 1))
        return np.stack(images) if images else np.zeros((0, *spec.shape[1:]), np.float32)


CalibrationSource = Union[str, os.PathLike, ImageFolder, Mapping[str, np.ndarray], Iterable]


POSITIONAL = "arr_0"  # the key numpy.savez gives an array passed without a name


def _from_arrays(arrays: Mapping[str, np.ndarray], inputs: list[TensorSpec], origin: str) -> list[dict]:
    if len(inputs) == 1 and list(arrays) == [POSITIONAL]:
        arrays = {inputs[0].name: arrays[POSITIONAL]}
    missing = [s.name for s in inputs if s.name not in arrays]
    if missing:
        hint = (f"; to use array '{next(iter(arrays))}' of {origin}, give {origin}:{next(iter(arrays))}"
                if len(inputs) == 1 and arrays and origin.endswith(".npz") else "")
        raise SqueezeError(f"calibration data {origin} lacks inputs {missing} (it holds {sorted(arrays)}): "
                           f"give one array per input name{hint}")
    arrays = {s.name: _batches_joined(np.asarray(arrays[s.name]), s) for s in inputs}
    counts = set()
    for spec in inputs:
        arr = arrays[spec.name]
        if arr.shape[1:] != spec.shape[1:] or (not spec.shape and arr.ndim > 1):
            raise SqueezeError(
                f"calibration array '{spec.name}' has shape {list(arr.shape)}, expected [N, "
                f"{', '.join(map(str, spec.shape[1:]))}]: reshape or preprocess the data"
            )
        if arr.dtype != np.dtype(spec.dtype):
            raise SqueezeError(f"calibration array '{spec.name}' has dtype {arr.dtype}, the model takes "
                               f"{spec.dtype}: convert it")
        if arr.ndim:  # a scalar input takes one value per sample ([N]), or one for all (a scalar)
            counts.add(len(arr) // (spec.shape[0] if spec.shape else 1))
    n = min(counts, default=1)
    if n == 0:
        raise SqueezeError(f"calibration data {origin} is empty: give at least one sample per input")
    return [{s.name: _sample(arrays[s.name], s, i) for s in inputs} for i in range(n)]


def _batches_joined(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A stack of whole input batches ``[N, *shape]`` (samples saved one feed each) as ``[N*B, ...]``."""
    if spec.shape and arr.ndim == len(spec.shape) + 1 and arr.shape[1:] == tuple(spec.shape):
        return arr.reshape(-1, *spec.shape[1:])
    return arr


def _sample(arr: np.ndarray, spec: TensorSpec, i: int) -> np.ndarray:
    """Batch ``i`` of a calibration array for input ``spec``."""
    if not spec.shape:
        return arr[i] if arr.ndim else arr
    return arr[i * spec.shape[0]:(i + 1) * spec.shape[0]]


def _npz_and_key(source: str | os.PathLike) -> tuple[Path, str | None]:
    """``data.npz`` or ``data.npz:KEY`` (one array of the file, for a one-input model)."""
    text = os.fspath(source)
    head, sep, key = text.rpartition(":")
    if sep and head.endswith(".npz") and key and not Path(text).exists():
        return Path(head), key
    return Path(text), None


def load_calibration(source: CalibrationSource, inputs: list[TensorSpec]) -> list[dict]:
    """Validate calibration data and split it into model-sized batches.

    ``source`` may be an ``.npz`` path (one array per input name, leading sample axis; or
    ``data.npz:KEY`` naming the array of a one-input model), an
    :class:`ImageFolder`, a dict of arrays, or an iterable of ``{input name: batch}`` dicts.
    """
    if isinstance(source, ImageFolder):
        batches = _from_arrays({inputs[0].name: source.load(inputs[0])}, inputs, str(source.path))
    elif isinstance(source, (str, os.PathLike)):
        path, key = _npz_and_key(source)
        if not path.is_file():
            raise SqueezeError(f"calibration data not found: {path}: give an .npz file or a folder of images")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:
            raise SqueezeError(f"{path} is not a readable .npz file ({err}): save arrays with numpy.savez") from None
        if key is not None:
            if key not in arrays:
                raise SqueezeError(f"{path} has no array '{key}' (it holds {sorted(arrays)}): name one of them")
            if len(inputs) != 1:
                raise SqueezeError(f"{path}:{key} names one array but the model has {len(inputs)} inputs: give "
                                   "an .npz with one array per input name")
            arrays = {inputs[0].name: arrays[key]}
        batches = _from_arrays(arrays, inputs, str(path))
    elif isinstance(source, Mapping):
        batches = _from_arrays(source, inputs, "(dict)")
    else:
        batches = [b for item in source
                   for b in _from_arrays(item if isinstance(item, Mapping) else {inputs[0].name: item},
                                         inputs, "(iterable)")]
        if not batches:
            raise SqueezeError("calibration data (iterable) is empty: give at least one sample")
    for batch in batches:
        for name, arr in batch.items():
            if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                raise SqueezeError(f"calibration array '{name}' holds NaN or Inf values: clean the data")
    return batches


def observed_vars(func: relax.Function) -> list[relax.Var]:
    """The tensors calibration observes: float inputs and every float-valued op result of ``main``."""
    values = [v for v in user_inputs(func) if str(v.ty.dtype) == "float32"]
    for block in func.body.blocks:
        for binding in block.bindings:
            ty = binding.var.ty
            if isinstance(binding.value, (relax.Call, relax.TupleGetItem)) and isinstance(ty, relax.TensorType) \
                    and str(ty.dtype) == "float32":  # a split's parts too
                values.append(binding.var)
    return values


def _all_vars(func: relax.Function) -> list[relax.Var]:
    return list(func.params) + [b.var for blk in func.body.blocks for b in blk.bindings]


def instrument(mod: tvm.IRModule, watched: list[relax.Var]) -> tvm.IRModule:
    """A copy of ``mod`` whose ``main`` returns every watched tensor (matched by binding position)."""
    position = {v: i for i, v in enumerate(_all_vars(mod["main"]))}
    func = relax.transform.ToNonDataflow()(mod)["main"]
    now = _all_vars(func)
    outs = [now[position[v]] for v in watched]
    body = relax.SeqExpr(func.body.blocks, relax.Tuple(outs))
    new = relax.Function(func.params, body, ret_ty=relax.TupleType([v.ty for v in outs]), attrs=func.attrs)
    return relax.transform.ConvertToDataflow()(with_main(mod, new))


class ChannelMean:
    """Running mean per channel (axis 1 of 4-D tensors, the last axis otherwise)."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        x = np.atleast_1d(x)  # a scalar is one channel
        axis = 1 if x.ndim == 4 else x.ndim - 1
        moved = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis]).astype(np.float64)
        self.total = moved.sum(axis=0) + (0 if self.total is None else self.total)
        self.count += moved.shape[0]

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count
