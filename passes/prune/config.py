"""``PruneConfig``: what to prune, how much, by which criterion; from Python, the CLI or TOML."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from typing import Any, Mapping

from compiler.errors import SqueezeError

from .importance import CRITERIA, NEEDS_CALIBRATION
from .ratios import check_ratio

STRUCTURED = ("filter", "channel")
SPARSE = ("nm", "block", "element")
GRANULARITIES = STRUCTURED + SPARSE


@dataclass
class PruneConfig:
    """Pruning settings.

    Parameters
    ----------
    granularity : str
        ``filter`` (output channels, scored on the filters that produce them), ``channel``
        (input channels, scored on the rows that read them), ``nm`` (N:M sparsity), ``block``
        (block sparsity) or ``element`` (unstructured magnitude sparsity, storage only).
        Filter and channel pruning both remove whole channel groups physically.
    ratio : float, dict or "sensitivity"
        Required except for ``nm``: there is no default amount of pruning.
        Fraction of channels (or, for block/element, of weights) removed: one global value;
        ``{pattern: ratio}`` per layer (fnmatch on group, ONNX node or weight names; ``"*"`` for
        the rest); or ``"sensitivity"`` to derive per-layer ratios removing ``macs_target``.
    criterion : str
        ``l1``, ``l2``, ``fpgm``, ``bn_scale``, ``apoz``, ``variance`` or ``random``.
    round_to : int
        Kept channel counts are multiples of this (e.g. the target's vector width).
    calibration : path to .npz, dict of arrays or iterable of batches, optional
        Inputs for activation criteria, the sensitivity scan and reconstruction.
    reconstruct : bool, optional
        Least-squares re-fit of the layers reading pruned channels (default: on with calibration).
    recalibrate_bn : bool, optional
        Re-estimate BatchNorm statistics after layers not re-fitted (default: on with calibration).
    macs_target : float
        Fraction of MACs to remove when ``ratio="sensitivity"``.
    validation : path to .npz or dict, optional
        Labelled data (the model's inputs and ``labels``, a class index per sample) scoring
        the sensitivity scan by the pruned model's cross-entropy, each trial re-fitted on all
        calibration samples; without it trials are scored by their output error on 64
        calibration samples.
    search_steps : int
        After the sensitivity allocation, at most this many local-search moves trading
        channels between two groups (see :func:`~passes.prune.ratios.local_search`).
    nm : (int, int)
        N and M of N:M sparsity (N kept in every M consecutive input weights).
    block : (int, int)
        Block shape (input rows, output columns) of block sparsity.
    max_samples : int
        Calibration samples used at most.
    seed : int
        Seed of the random criterion and of row sampling.
    """

    granularity: str = "filter"
    ratio: Any = None
    criterion: str = "l1"
    round_to: int = 1
    calibration: Any = None
    reconstruct: bool | None = None
    recalibrate_bn: bool | None = None
    macs_target: float = 0.5
    validation: Any = None
    search_steps: int = 0
    nm: tuple[int, int] = (2, 4)
    block: tuple[int, int] = (1, 16)
    max_samples: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise SqueezeError(f"unknown pruning granularity '{self.granularity}': "
                               f"choose one of {', '.join(GRANULARITIES)}")
        if self.criterion not in CRITERIA:
            raise SqueezeError(f"unknown pruning criterion '{self.criterion}': choose one of {', '.join(CRITERIA)}")
        if isinstance(self.ratio, Mapping):
            self.ratio = {str(k): check_ratio(v, f"ratio for '{k}'") for k, v in self.ratio.items()}
        elif self.ratio == "sensitivity":
            check_ratio(self.macs_target, "MAC reduction target")
            if self.granularity not in STRUCTURED:
                raise SqueezeError("ratio='sensitivity' applies to filter or channel pruning")
        elif self.granularity != "nm":
            if self.ratio is None:
                raise SqueezeError(f"{self.granularity} pruning needs a ratio, e.g. {self.granularity}:0.5 (the "
                                   "fraction removed) or filter:sensitivity,macs=0.5: there is no default")
            self.ratio = check_ratio(self.ratio)
        if (self.validation is not None or self.search_steps) and self.ratio != "sensitivity":
            raise SqueezeError("validation data and search_steps serve ratio='sensitivity' only: drop them or "
                               "use the sensitivity ratio")
        if int(self.search_steps) < 0:
            raise SqueezeError(f"search_steps must be 0 or more, not {self.search_steps}")
        if int(self.round_to) < 1:
            raise SqueezeError(f"round_to must be a positive integer, not {self.round_to}")
        n, m = (int(v) for v in self.nm)
        if not 0 < n < m:
            raise SqueezeError(f"N:M sparsity needs 0 < N < M, not {n}:{m}")
        if len(self.block) != 2 or min(int(b) for b in self.block) < 1:
            raise SqueezeError(f"block shape must be two positive integers, not {self.block}")
        needs = self.criterion in NEEDS_CALIBRATION or self.ratio == "sensitivity"
        if needs and self.calibration is None and self.granularity in STRUCTURED:
            what = f"criterion '{self.criterion}'" if self.criterion in NEEDS_CALIBRATION else "ratio='sensitivity'"
            raise SqueezeError(f"{what} needs calibration data: pass calibration=... (squeeze: --calib data.npz)")

    @property
    def refit(self) -> bool:
        """Whether least-squares reconstruction runs."""
        return self.calibration is not None if self.reconstruct is None else bool(self.reconstruct)

    @property
    def refit_bn(self) -> bool:
        """Whether BatchNorm statistics are re-estimated."""
        return self.calibration is not None if self.recalibrate_bn is None else bool(self.recalibrate_bn)

    @classmethod
    def parse(cls, spec: str, **overrides) -> "PruneConfig":
        """From the CLI form ``GRANULARITY[:RATIO][,key=value...]``.

        Examples: ``filter:0.5``, ``filter:0.5,criterion=fpgm,round_to=8``,
        ``channel:sensitivity,macs=0.5,validation=val.npz,search=4``, ``nm:2:4``,
        ``block:0.8,block=1x16``, ``element:0.7``.
        """
        head, *options = [p.strip() for p in spec.split(",") if p.strip()] or [""]
        granularity, _, ratio = head.partition(":")
        values: dict[str, Any] = {"granularity": granularity}
        if granularity == "nm" and ratio:
            values["nm"] = _pair(ratio, ":")
        elif ratio:
            values["ratio"] = ratio if ratio == "sensitivity" else _number(ratio, "ratio")
        aliases = {"macs": "macs_target", "samples": "max_samples", "search": "search_steps"}
        names = {f.name for f in fields(cls)}
        for option in options:
            key, sep, value = option.partition("=")
            key = aliases.get(key.strip(), key.strip())
            if not sep or key not in names or key in ("granularity", "calibration"):
                raise SqueezeError(f"bad prune option '{option}' in '{spec}': use key=value with key in "
                                   "criterion, round_to, macs, validation, search, block, nm, reconstruct, "
                                   "recalibrate_bn, samples, seed")
            values[key] = _option(key, value.strip())
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | os.PathLike, **defaults) -> "PruneConfig | None":
        """The ``[prune]`` table of a recipe file, or None when it has none; ``defaults`` fill
        the keys it leaves out (e.g. the command line's calibration data)."""
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f).get("prune")
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise SqueezeError(f"cannot read recipe {path}: {err}") from None
        return cls.from_table(table, f"recipe {path}", **defaults)

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None, origin: str, **defaults) -> "PruneConfig | None":
        """A parsed ``[prune]`` table (None gives None); unknown keys are errors naming ``origin``."""
        if table is None:
            return None
        table = dict(table)
        unknown = set(table) - {f.name for f in fields(cls)}
        if unknown:
            raise SqueezeError(f"{origin}: unknown [prune] keys {sorted(unknown)}")
        for key in ("nm", "block"):
            if key in table:
                table[key] = tuple(table[key])
        return cls(**{**defaults, **table})


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SqueezeError(f"prune {what} '{text}' is not a number") from None


def _pair(text: str, sep: str) -> tuple[int, int]:
    parts = text.lower().split(sep)
    try:
        a, b = (int(p) for p in parts)
    except ValueError:
        raise SqueezeError(f"expected two integers as A{sep}B, not '{text}'") from None
    return a, b


def _option(key: str, value: str) -> Any:
    if key in ("reconstruct", "recalibrate_bn"):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise SqueezeError(f"prune option {key} takes true or false, not '{value}'")
        return value.lower() in ("true", "1", "yes")
    if key == "block":
        return _pair(value, "x")
    if key == "nm":
        return _pair(value, ":")
    if key in ("round_to", "max_samples", "seed", "search_steps"):
        return int(_number(value, key))
    if key == "macs_target":
        return _number(value, key)
    return value
