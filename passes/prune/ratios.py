"""How many channels each group keeps: global, per-layer, or from a sensitivity scan."""
from __future__ import annotations

import fnmatch
from typing import Callable, Mapping, Sequence

import numpy as np

from compiler.errors import SqueezeError
from compiler.progress import Progress

from .depgraph import DepGraph, Group, Plan

SCAN_RATIOS = tuple(k / 16 for k in range(1, 13))  # 6.25% steps up to 75%


def check_ratio(ratio: float, what: str = "prune ratio") -> float:
    """``ratio`` as a float in [0, 1), or a one-line error."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise SqueezeError(f"{what} '{ratio}' is not a number: give a fraction in [0, 1)") from None
    if not 0.0 <= value < 1.0:
        raise SqueezeError(f"{what} {value:g} is outside [0, 1): give the fraction of channels to remove")
    return value


def channel_step(group: Group, round_to: int = 1) -> int:
    """Granularity of ``group``'s kept count: ``round_to`` for groups of real channels, 1 for
    derived ones such as attention heads."""
    return round_to if group.direct and round_to > 1 else 1


def keep_count(group: Group, ratio: float, round_to: int = 1) -> int:
    """Channels ``group`` keeps when removing ``ratio`` of them, a multiple of ``round_to``
    for groups of real channels (not for derived ones such as attention heads)."""
    if ratio == 0:
        return group.size
    step = channel_step(group, round_to)
    keep = min(group.size, int(np.floor(group.size * (1.0 - ratio) / step + 0.5)) * step)
    if keep <= 0:
        extra = f" with round_to={round_to}" if step > 1 else ""
        raise SqueezeError(f"ratio {ratio:g} would remove all {group.size} channels of '{group.name}'{extra}: "
                           "lower the ratio for this layer")
    return keep


def top(scores: np.ndarray, keep: int) -> np.ndarray:
    """Sorted indices of the ``keep`` highest scores (ties: lower index first)."""
    return np.sort(np.argsort(-np.asarray(scores), kind="stable")[:keep])


def group_ratios(groups: Sequence[Group], ratio: float | Mapping[str, float]) -> dict[int, float]:
    """Ratio of each group: a global float, or ``{pattern: ratio}`` matched (fnmatch) against
    group names, layer (ONNX node) names and weight names; unmatched groups keep everything."""
    if not isinstance(ratio, Mapping):
        value = check_ratio(ratio)
        return {g.id: value for g in groups}
    out, used = {}, set()
    for g in groups:
        names = [g.name, *{m.layer for m in g.members if m.role == "out"}, *{m.param for m in g.members}]
        for pattern, value in ratio.items():
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                out[g.id] = check_ratio(value, f"ratio for '{pattern}'")
                used.add(pattern)
                break
    unknown = [p for p in ratio if p not in used]
    if unknown:
        listing = ", ".join(g.name for g in groups[:8]) + (", ..." if len(groups) > 8 else "")
        raise SqueezeError(f"per-layer ratio names {unknown} match no prunable group: groups are {listing}")
    return out


def make_plan(groups: Sequence[Group], scores: Mapping[int, np.ndarray], ratios: Mapping[int, float],
              round_to: int = 1) -> dict[int, np.ndarray]:
    """Kept channel indices of every group with a ratio."""
    return {g.id: top(scores[g.id], keep_count(g, ratios[g.id], round_to)) for g in groups if g.id in ratios}


def sensitivity_ratios(graph: DepGraph, scores: Mapping[int, np.ndarray], error: Callable[[Plan], float],
                       macs_target: float, round_to: int = 1,
                       log: Callable[[str], None] | None = None) -> dict[int, float]:
    """Per-group ratios removing ``macs_target`` of the MACs where it hurts least.

    Each group is pruned alone at ``SCAN_RATIOS`` and ``error(plan)`` measured; then ratios
    grow greedily, always where the error rises least per MAC removed, until the MAC budget
    is met (the survey's non-uniform, sensitivity-derived allocation).
    """
    target = check_ratio(macs_target, "MAC reduction target")
    base = graph.macs()
    unpruned = error({})  # not 0 for a score such as the validation cross-entropy
    curve: dict[int, list[float]] = {}
    progress = Progress(len(graph.groups) * len(SCAN_RATIOS), "sensitivity scan (trials)", log)
    for g in graph.groups:
        curve[g.id] = [unpruned]
        for r in SCAN_RATIOS:
            try:
                curve[g.id].append(error(make_plan([g], scores, {g.id: r}, round_to)))
            except SqueezeError:  # this ratio would empty the group: stop its scan here
                break
            finally:
                progress.step()
        if log is not None:
            log(f"sensitivity {g.name}: " + " ".join(f"{e:.3f}" for e in curve[g.id][1:]))
    level = {g.id: 0 for g in graph.groups}
    levels = (0.0, *SCAN_RATIOS)
    ratios = {gid: 0.0 for gid in level}
    macs = base
    while macs > base * (1.0 - target):
        best = None
        for g in graph.groups:
            nxt = level[g.id] + 1
            if nxt >= len(curve[g.id]):
                continue
            trial = {**ratios, g.id: levels[nxt]}
            gain = macs - graph.macs(make_plan(graph.groups, scores, trial, round_to))
            cost = max(curve[g.id][nxt] - curve[g.id][level[g.id]], 0.0) + 1e-9
            if gain > 0 and (best is None or cost / gain < best[0]):
                best = (cost / gain, g.id, nxt, macs - gain)
        if best is None:
            raise SqueezeError(f"cannot remove {target:.0%} of the MACs by pruning groups up to "
                               f"{SCAN_RATIOS[-1]:.0%}: lower the target")
        _, gid, nxt, macs = best
        level[gid], ratios[gid] = nxt, levels[nxt]
    return ratios


def local_search(graph: DepGraph, scores: Mapping[int, np.ndarray], error: Callable[[Plan], float],
                 ratios: Mapping[int, float], macs_target: float, round_to: int = 1, steps: int = 1,
                 slack: float = 0.02, log: Callable[[str], None] | None = None) -> dict[int, float]:
    """Improve an allocation by trading channels between two groups.

    Each step tries every move that gives one group 1, 2 or 4 channels (in ``round_to`` units)
    and takes 1, 2, 4 or 8 from another while between ``macs_target`` and ``macs_target +
    slack`` of the MACs stay removed, and takes the move lowering ``error`` most; it stops after
    ``steps`` moves or when none helps. Each step costs about ``12 × groups²`` evaluations.
    """
    groups = {g.id: g for g in graph.groups}
    unit = {g.id: channel_step(g, round_to) for g in graph.groups}
    counts = {gid: keep_count(groups[gid], ratios.get(gid, 0.0), round_to) for gid in groups}
    base = graph.macs()

    def plan_of(c: Mapping[int, int]) -> Plan:
        return {gid: top(scores[gid], k) for gid, k in c.items() if k < groups[gid].size}

    def removed(c: Mapping[int, int]) -> float:
        return 1.0 - graph.macs(plan_of(c)) / base

    cache: dict[tuple, float] = {}
    progress = Progress(None, "local search (trials)", log)

    def cost(c: Mapping[int, int]) -> float:
        key = tuple(sorted(c.items()))
        if key not in cache:
            cache[key] = error(plan_of(c))
            progress.step()
        return cache[key]

    for step in range(steps):
        moves = []
        for gain in groups:
            for loss in groups:
                for up in (1, 2, 4):
                    for down in (1, 2, 4, 8):
                        trial = {**counts, gain: counts[gain] + up * unit[gain], loss: counts[loss] - down * unit[loss]}
                        if (gain != loss and trial[gain] <= groups[gain].size and trial[loss] >= 1
                                and macs_target <= removed(trial) <= macs_target + slack):
                            moves.append(trial)
        now = cost(counts)
        progress.total = progress.count + len(moves)  # at most: some moves were scored before
        if log is not None:
            log(f"search step {step + 1}/{steps}: {len(moves)} moves to score")
        best = min(moves, key=cost, default=None)
        if best is None or cost(best) >= now - 1e-6 * abs(now):
            break
        counts = best
        if log is not None:
            log(f"search step {step + 1}: score {now:.4f} -> {cost(best):.4f}, kept "
                + " ".join(f"{counts[gid]}/{groups[gid].size}" for gid in groups))
    return {gid: 1.0 - k / groups[gid].size for gid, k in counts.items()}
