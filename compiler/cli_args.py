"""Argument helpers shared by the ``squeeze`` subcommands (compile, prune, tune, ...)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition(":")
    try:
        if not sep or not name:
            raise ValueError
        return name, tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad input shape '{text}': use name:1x3x224x224") from None


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def add_calibration_args(group) -> None:
    """``--calib`` and its image preprocessing options (shared by compile and prune)."""
    group.add_argument("--calib", help="calibration data: .npz (one array per input) or a folder of images")
    group.add_argument("--calib-mean", type=_floats, default=(0.0, 0.0, 0.0), help="image normalization mean")
    group.add_argument("--calib-std", type=_floats, default=(1.0, 1.0, 1.0), help="image normalization std")
    group.add_argument("--calib-gray", action="store_true", help="read calibration images as grayscale")


def calibration_source(args):
    """``--calib`` as a calibration source: an .npz path, an ImageFolder, or None."""
    if not getattr(args, "calib", None):
        return None
    if Path(args.calib).is_dir():
        from .config import ImageFolder

        return ImageFolder(args.calib, mean=args.calib_mean, std=args.calib_std, grayscale=args.calib_gray)
    return args.calib


