"""Model zoo: bundled Fashion-MNIST ResNet-8, exported ImageNet-shaped models and data.

Never imports torch: models other than the bundled one are exported once by the torch venv
(``make torch``) in a subprocess and cached as ONNX.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

MODELS = ("fmnist-resnet8", "resnet18", "mobilenetv2", "efficientnet-lite0", "transformer-block")
# Input shape (batch 1) of each model's single input "input".
INPUT_SHAPES = {
    "fmnist-resnet8": (1, 1, 28, 28),
    "resnet18": (1, 3, 224, 224),
    "mobilenetv2": (1, 3, 224, 224),
    "efficientnet-lite0": (1, 3, 224, 224),
    "transformer-block": (1, 16, 64),
}
# Fashion-MNIST normalization used in training: (pixel / 255 - MEAN) / STD.
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530

_ZOO = Path(__file__).resolve().parent
_REPO = _ZOO.parents[1]
_DATA = _ZOO / "data"
_FMNIST_SUBDIR = Path("usr/share/datasets/fashion-mnist")
_FMNIST_FILES = {"train": "train", "test": "t10k"}


def cache_dir() -> Path:
    """Squeeze's cache folder: ``$SQUEEZE_CACHE`` or ``~/.cache/squeeze``."""
    return Path(os.environ.get("SQUEEZE_CACHE") or Path.home() / ".cache" / "squeeze")


def torch_python() -> Path:
    """Python of the torch venv: ``$SQUEEZE_TORCH_PYTHON`` or ``<repo>/.venv-torch/bin/python``."""
    return Path(os.environ.get("SQUEEZE_TORCH_PYTHON") or _REPO / ".venv-torch" / "bin" / "python")


def model_path(name: str) -> Path:
    """Path of zoo model ``name`` as ONNX, exporting it into the cache on first use.

    Parameters
    ----------
    name : str
        One of ``MODELS``.

    Returns
    -------
    Path
        The bundled file for "fmnist-resnet8", else ``cache_dir()/zoo/NAME.onnx``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown zoo model {name!r}: valid names are {', '.join(MODELS)}")
    if name == "fmnist-resnet8":
        return _DATA / "fmnist_resnet8.onnx"
    out = cache_dir() / "zoo" / f"{name}.onnx"
    if out.is_file():
        return out
    python = torch_python()
    if not python.is_file():
        raise FileNotFoundError(f"torch venv not found: run `make torch` (looked for {python})")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".onnx", dir=out.parent)
    os.close(fd)
    try:
        cmd = [str(python), "-m", "compiler.zoo.export", name, tmp]
        proc = subprocess.run(cmd, cwd=_REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"exporting {name} failed:\n{proc.stderr.strip()[-2000:]}")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def _fmnist_dir() -> Path:
    """Folder holding the Fashion-MNIST IDX files (system-wide or unpacked by ``make data``)."""
    candidates = [Path("/") / _FMNIST_SUBDIR, cache_dir() / "fmnist-deb" / _FMNIST_SUBDIR,
                  _REPO / ".cache" / "fmnist-deb" / _FMNIST_SUBDIR]
    for folder in candidates:
        if (folder / "t10k-labels-idx1-ubyte.gz").is_file():
            return folder
    raise FileNotFoundError("Fashion-MNIST not found: run `make data` (Debian package dataset-fashion-mnist)")


def _read_idx(path: Path) -> np.ndarray:
    """Decode a gzipped IDX file of unsigned bytes."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 N×1×28×28 images → float32 inputs exactly as the bundled model was trained on."""
    return ((images.astype(np.float32) / 255.0 - FMNIST_MEAN) / FMNIST_STD).astype(np.float32)


def fashion_mnist_raw(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``split`` ("train" or "test") as uint8 N×1×28×28 images and int64 labels."""
    if split not in _FMNIST_FILES:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    folder, prefix = _fmnist_dir(), _FMNIST_FILES[split]
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")[:, None]
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def fashion_mnist(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``split`` as normalized float32 N×1×28×28 images and int64 labels."""
    images, labels = fashion_mnist_raw(split)
    return normalize(images), labels


def bundled_slice() -> dict[str, np.ndarray]:
    """Small bundled Fashion-MNIST slice (no ``make data`` needed).

    Returns
    -------
    dict
        "calib": float32 N×1×28×28 train images for calibration; "test_x": float32 test
        images; "test_y": their int64 labels.
    """
    with np.load(_DATA / "fmnist_slice.npz") as npz:
        return {"calib": normalize(npz["calib"]), "test_x": normalize(npz["test_x"]),
                "test_y": npz["test_y"].astype(np.int64)}
