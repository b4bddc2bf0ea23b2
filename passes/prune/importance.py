"""Channel importance criteria: ``criterion(group) -> scores`` (higher = keep).

Weight criteria read the group's weight slices with the chosen roles ("out": the filters that
produce the channels, "in": the consumer rows that read them); when several layers share a
group (residual ties), each layer's scores are divided by their mean before summing, so no
layer dominates by scale alone. Activation criteria read per-channel statistics measured on
calibration data (:func:`passes.prune.calibration.channel_stats`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from compiler.errors import SqueezeError

from .depgraph import Group

ROLES = {"filter": ("out",), "channel": ("in",)}


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel activation statistics of one group over calibration data."""

    zero_fraction: np.ndarray
    variance: np.ndarray


def _combine(per_member: list[np.ndarray]) -> np.ndarray:
    return np.sum([s / max(float(s.mean()), 1e-12) for s in per_member], axis=0)


class Criterion(ABC):
    """Scores the channels of a group; subclasses define ``name`` and ``__call__``."""

    name = ""

    @abstractmethod
    def __call__(self, group: Group) -> np.ndarray:
        """Importance of each of ``group.size`` channels (higher = more important)."""


class _WeightCriterion(Criterion):
    def __init__(self, params: Mapping[str, np.ndarray], granularity: str = "filter") -> None:
        self.params = params
        self.roles = ROLES.get(granularity, ROLES["filter"])

    def slices(self, group: Group) -> list[np.ndarray]:
        found = group.slices(self.params, self.roles)
        return found or group.slices(self.params, ROLES["filter"])


class L1(_WeightCriterion):
    """Sum of absolute weights per channel (Li et al., 2017)."""

    name = "l1"

    def __call__(self, group: Group) -> np.ndarray:
        return _combine([np.abs(w).sum(axis=1) for w in self.slices(group)])


class L2(_WeightCriterion):
    """Euclidean norm of the weights per channel."""

    name = "l2"

    def __call__(self, group: Group) -> np.ndarray:
        return _combine([np.sqrt((w.astype(np.float64) ** 2).sum(axis=1)) for w in self.slices(group)])


class FPGM(_WeightCriterion):
    """Distance to the other filters (He et al., 2019): filters near the geometric median are
    replaceable by the rest and score lowest."""

    name = "fpgm"

    def __call__(self, group: Group) -> np.ndarray:
        w = np.concatenate(self.slices(group), axis=1).astype(np.float64)
        sq = (w ** 2).sum(axis=1)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * w @ w.T, 0.0))
        return dist.sum(axis=1)


class BNScale(Criterion):
    """|gamma| of the group's BatchNorms (network slimming, Liu et al., 2017)."""

    name = "bn_scale"

    def __init__(self, params: Mapping[str, np.ndarray]) -> None:
        self.params = params

    def __call__(self, group: Group) -> np.ndarray:
        gammas = group.slices(self.params, ("bn_weight",))
        if not gammas:
            raise SqueezeError(f"criterion 'bn_scale' needs a BatchNormalization on every pruned group; "
                               f"'{group.name}' has none (BN folded at export?): use l1 or fpgm")
        return _combine([np.abs(g).mean(axis=1) for g in gammas])


class _ActivationCriterion(Criterion):
    def __init__(self, stats: Mapping[int, ChannelStats] | None) -> None:
        if stats is None:
            raise SqueezeError(f"criterion '{self.name}' needs calibration data: "
                               "pass calibration=... (squeeze: --calib data.npz)")
        self.stats = stats

    def of(self, group: Group) -> ChannelStats:
        if group.id not in self.stats:
            raise SqueezeError(f"criterion '{self.name}': no layer reads group '{group.name}' to measure it")
        return self.stats[group.id]


class APoZ(_ActivationCriterion):
    """1 - average percentage of zeros of the channel's activations (Hu et al., 2016)."""

    name = "apoz"

    def __call__(self, group: Group) -> np.ndarray:
        return 1.0 - self.of(group).zero_fraction


class OutputVariance(_ActivationCriterion):
    """Variance of the channel's activations: near-constant channels carry little information
    (and reconstruction can fold their mean into the next layer's bias)."""

    name = "variance"

    def __call__(self, group: Group) -> np.ndarray:
        return self.of(group).variance


class ReconstructionError(Criterion):
    """Greedy ThiNet selection (Luo et al., 2017): repeatedly remove the channel whose removal
    adds least to the error of the layers reading the group, given those already removed.
    Scores are removal order, so every ratio keeps the greedy choice.

    Parameters
    ----------
    grams : dict, optional
        Per group id, the Gram matrix of the channels' output contributions
        (:func:`passes.prune.calibration.contribution_grams`).
    """

    name = "reconstruction"

    def __init__(self, grams: Mapping[int, np.ndarray] | None) -> None:
        if grams is None:
            raise SqueezeError(f"criterion '{self.name}' needs calibration data: "
                               "pass calibration=... (squeeze: --calib data.npz)")
        self.grams = grams

    def __call__(self, group: Group) -> np.ndarray:
        gram = self.grams.get(group.id)
        if gram is None:
            raise SqueezeError(f"criterion '{self.name}': no layer reads group '{group.name}' to measure it")
        scores = np.empty(group.size)
        cross = np.zeros(group.size)          # <sum of removed contributions, z_c>
        left = np.ones(group.size, dtype=bool)
        for step in range(group.size):
            cost = np.where(left, 2 * cross + np.diag(gram), np.inf)
            c = int(np.argmin(cost))
            scores[c], left[c] = step, False
            cross += gram[c]
        return scores


class Random(Criterion):
    """Uniform random scores: the baseline every criterion should beat."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, group: Group) -> np.ndarray:
        return self.rng.random(group.size)


CRITERIA = ("l1", "l2", "fpgm", "bn_scale", "apoz", "variance", "reconstruction", "random")
NEEDS_CALIBRATION = ("apoz", "variance", "reconstruction")


def make_criterion(name: str, params: Mapping[str, np.ndarray], granularity: str = "filter",
                   stats: Mapping[int, ChannelStats] | None = None, seed: int = 0,
                   grams: Mapping[int, np.ndarray] | None = None) -> Criterion:
    """Instantiate criterion ``name`` (one of ``CRITERIA``); activation criteria take ``stats``,
    ``reconstruction`` takes ``grams``."""
    weight = {"l1": L1, "l2": L2, "fpgm": FPGM}
    if name in weight:
        return weight[name](params, granularity)
    if name == "bn_scale":
        return BNScale(params)
    if name == "apoz":
        return APoZ(stats)
    if name == "variance":
        return OutputVariance(stats)
    if name == "reconstruction":
        return ReconstructionError(grams)
    if name == "random":
        return Random(seed)
    raise SqueezeError(f"unknown pruning criterion '{name}': choose one of {', '.join(CRITERIA)}")
