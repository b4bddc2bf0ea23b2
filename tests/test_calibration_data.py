"""Calibration data as arrays: one batch axis, or a stack of whole input batches."""
import numpy as np
import pytest

from compiler.errors import SqueezeError
from compiler.program import TensorSpec
from passes.quantize.calibrate import load_calibration

IMAGE = TensorSpec("image", (1, 3, 4, 5), "float32")


def test_samples_along_the_batch_axis():
    data = np.arange(6 * 60, dtype=np.float32).reshape(6, 3, 4, 5)
    feeds = load_calibration({"image": data}, [IMAGE])
    assert len(feeds) == 6
    np.testing.assert_array_equal(feeds[4]["image"], data[4:5])


def test_stack_of_whole_batches_as_saved_one_feed_each():
    """``np.stack([feed["image"] for feed in feeds])``: ``[N, 1, 3, 4, 5]``."""
    data = np.arange(6 * 60, dtype=np.float32).reshape(6, 1, 3, 4, 5)
    feeds = load_calibration({"image": data}, [IMAGE])
    assert len(feeds) == 6
    np.testing.assert_array_equal(feeds[4]["image"], data[4])


def test_other_shapes_refused():
    with pytest.raises(SqueezeError, match=r"has shape \[6, 2, 3, 4, 5\], expected \[N, 3, 4, 5\]"):
        load_calibration({"image": np.zeros((6, 2, 3, 4, 5), np.float32)}, [IMAGE])
