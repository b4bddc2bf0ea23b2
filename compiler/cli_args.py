"""Argument helpers shared by the ``squeeze`` subcommands (compile, prune, tune, ...)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .errors import SqueezeError
from .progress import to_stderr


SHAPE_FORMS = "name:1x3x224x224, name:1,3,224,224 or name:[1,3,224,224]"


def shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    """``--input-shape``: ``name:1x3x224x224``, ``name:1,3,224,224`` or tvmc's ``name:[1,3,224,224]``."""
    name, sep, dims = text.strip().rpartition(":")
    dims = dims.strip()
    if dims.startswith("[") and dims.endswith("]"):
        dims = dims[1:-1]
    parts = [d.strip() for d in dims.lower().replace(",", "x").split("x")]
    if not sep or not name or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"bad input shape '{text}': use {SHAPE_FORMS} (positive integer dims)")
    return name, tuple(int(p) for p in parts)


def batch_arg(text: str) -> tuple[int, ...]:
    """``--batch``: comma-separated batch sizes, e.g. ``1,8,32``."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"bad batch sizes '{text}': use positive integers, e.g. --batch 1,8,32")
    return tuple(dict.fromkeys(int(p) for p in parts))


log = to_stderr  # progress and result lines of the commands go to stderr


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


CALIB_MEAN, CALIB_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # defaults: pixels in [0, 1], not normalized


def add_calibration_args(group) -> None:
    """``--calib`` and its image preprocessing options (shared by compile and prune)."""
    group.add_argument("--calib", help="calibration data: .npz (one array per input) or a folder of images")
    group.add_argument("--calib-mean", type=_floats, default=CALIB_MEAN, help="image normalization mean")
    group.add_argument("--calib-std", type=_floats, default=CALIB_STD, help="image normalization std")
    group.add_argument("--calib-gray", action="store_true", help="read calibration images as grayscale")


def calibration_source(args):
    """``--calib`` as a calibration source: an .npz path, an ImageFolder, or None."""
    if not getattr(args, "calib", None):
        return None
    if Path(args.calib).is_dir():
        from .config import ImageFolder

        if args.calib_mean == CALIB_MEAN and args.calib_std == CALIB_STD:
            log(f"calibration images: pixels scaled to [0, 1], mean {CALIB_MEAN[0]:g} / std {CALIB_STD[0]:g} (no "
                "normalization): pass --calib-mean/--calib-std if the model was trained with one")
        return ImageFolder(args.calib, mean=args.calib_mean, std=args.calib_std, grayscale=args.calib_gray)
    return args.calib


def add_quantization_args(parser: argparse.ArgumentParser, title: str = "quantization") -> None:
    """``--quantize``, ``--calib`` and the quantizer's options (compile, tune, export)."""
    q = parser.add_argument_group(title)
    q.add_argument("--quantize", metavar="int8[:SCHEME]",
                   help="post-training quantization: int8 (the target's default scheme), int8:SCHEME or an alias")
    add_calibration_args(q)
    q.add_argument("--observer", default="minmax", help="minmax, moving_average, percentile, entropy, mse")
    q.add_argument("--skip", help="comma-separated layers kept float (ONNX node names or conv2d_N)")
    q.add_argument("--skip-op", action="append", choices=["conv2d", "grouped_conv2d", "depthwise_conv2d", "matmul"],
                   help="layer kind kept float (conv2d covers every conv)")
    q.add_argument("--keep-first-last", action="store_true", help="keep the first and last layers float")
    q.add_argument("--equalize", action="store_true", help="cross-layer equalization before quantizing")
    q.add_argument("--bias-correction", nargs="?", const="all", choices=["auto", "all", "off"],
                   help="correct the output shift quantization causes: auto (per layer, where it lowers the layer's "
                        "output error on held-out calibration rows), all (every layer; the bare flag), off")
    q.add_argument("--adaround", action="store_true", help="learned rounding of the weight codes per layer (AdaRound)")
    q.add_argument("--adaround-iters", type=int, metavar="N", help="AdaRound's Adam steps per layer (default 400)")
    q.add_argument("--range-search", action="store_true",
                   help="choose layer-input ranges and weight clipping by each layer's output MSE")
    q.add_argument("--smoothquant", nargs="?", const=0.5, type=float, metavar="ALPHA",
                   help="SmoothQuant: migrate LayerNorm outputs' outliers into the next matmuls' weights (alpha 0.5)")


QUANT_ONLY = {"observer": "minmax", "skip": None, "skip_op": None, "keep_first_last": False, "equalize": False,
              "bias_correction": None, "adaround": False, "adaround_iters": None, "range_search": False,
              "smoothquant": None}  # flags that mean nothing without --quantize, with their defaults
BIAS_CORRECTION = {"auto": "auto", "all": True, "off": False}


def _check_flags(args) -> None:
    """Flags that would have no effect are errors, before any work."""
    unused = [f"--{k.replace('_', '-')}" for k, default in QUANT_ONLY.items() if getattr(args, k) != default]
    if unused:
        one = len(unused) == 1
        raise SqueezeError(f"{', '.join(unused)} {'has' if one else 'have'} no effect without --quantize: add "
                           f"--quantize int8 or drop {'it' if one else 'them'}")
    if args.calib and not getattr(args, "prune", None) and not getattr(args, "recipe", None):
        raise SqueezeError("--calib is used by --quantize, --prune or a recipe, and none is given: add "
                           "--quantize int8, or drop --calib")


def quant_config(args, data=None, required: bool = False):
    """``--quantize int8[:scheme]`` and its companions as a QuantConfig with calibration ``data``;
    None without ``--quantize`` unless ``required`` (then the target's default scheme)."""
    if not args.quantize and not required:
        _check_flags(args)
        return None
    from .config import QuantConfig

    if not args.calib:
        raise SqueezeError("--quantize needs calibration data: add --calib data.npz (or a folder of images)")
    # plain "int8": the target's default scheme (u8 x s8 on x86, s8 x s8 on ARM sdot)
    scheme = (args.quantize.partition(":")[2] or args.quantize) if args.quantize not in (None, "int8") else None
    return QuantConfig(
        scheme=scheme, calibration=data, observer=args.observer,
        skip=[s for s in (args.skip or "").split(",") if s], skip_ops=args.skip_op or [],
        keep_first_last=args.keep_first_last, equalize=args.equalize,
        **({"bias_correction": BIAS_CORRECTION[args.bias_correction]} if args.bias_correction else {}),
        adaround=args.adaround, range_search=args.range_search, smoothquant=args.smoothquant,
        **({"adaround_iters": args.adaround_iters} if args.adaround_iters is not None else {}),
    )


def read_npz(path: str, what: str = "inputs file", how: str = "numpy.savez") -> dict[str, np.ndarray]:
    """Every array of an .npz file; a missing or unreadable file is a one-line error saying
    how to write one (``how``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise SqueezeError(f"{what} not found: {path}: check the path") from None
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise SqueezeError(f"{path} is not a readable .npz file ({reason}): save it with {how}") from None


def load_npz(path: str, names: list[str]) -> dict[str, np.ndarray]:
    """Arrays of an .npz of inputs (a lone array may go by any key); one-line errors."""
    arrays = read_npz(path)
    if len(names) == 1 and len(arrays) == 1:  # a lone array may go by any key
        return {names[0]: next(iter(arrays.values()))}
    return arrays


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to an .npz atomically."""
    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
