"""MetaSchedule search space for the integer kernels.

The kernels' reduction blocks carry ``schedule_rule = "squeeze_int8"``; MetaSchedule's
``ApplyCustomRule`` (first of the default CPU rules) then calls :func:`custom_rule`, which
returns the default template of :mod:`.schedule` with the register tile sampled
(``sample_perfect_tile``: rows × accumulator vectors), tensorized with the ISA's dot product
(e.g. ``vpdpbusd`` for VNNI): the default schedule is one point of that space.
The search space is small (the divisors of the output width × those of the number of
output-channel vectors), so :class:`GridSearch` measures all of it, most promising first,
instead of running the evolutionary search (whose rounds cost 30-45 s of candidate
generation each here for spaces of a dozen points).

MetaSchedule's own ``MultiLevelTilingWithIntrin`` space is not offered: on these fused
kernels its ``RewriteLayout`` postproc produces candidates on which
``RemoveWeightLayoutRewriteBlock`` aborts the whole tuning run (``ind.as<PrimVar>()``).
Tuned kernels are checked numerically before use (``compiler.verify``).
"""
from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import tvm
import tvm_ffi
from tvm import s_tir
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.search_strategy import MeasureCandidate, PySearchStrategy
from tvm.s_tir.schedule import SBlockRV, ScheduleError

from .kernels import CUSTOM_RULE, KERNEL_ATTR
from .schedule import MAX_ACC_BYTES, block_isa, kernel_block, schedule_kernel

(RULE_ANNOTATION, RULE), = CUSTOM_RULE.items()
NO_RULE = "None"  # value that makes MetaSchedule skip a block already scheduled
GRID_FILE = "squeeze_grid.json"


def _all_blocks(sch: s_tir.Schedule) -> list[SBlockRV]:
    found, todo = [], [sch.get_sblock("root")]
    while todo:
        block = todo.pop()
        found.append(block)
        todo.extend(sch.get_child_blocks(block))
    return found


def custom_rule(sch: s_tir.Schedule, block: SBlockRV) -> list[s_tir.Schedule]:
    """The design space of one integer kernel (see the module docstring)."""
    kind = str(sch.get(block).annotations[KERNEL_ATTR])
    if schedule_kernel(sch, block, kind):
        for b in _all_blocks(sch):  # fully scheduled: the generic rules must leave every block alone
            sch.annotate(b, RULE_ANNOTATION, NO_RULE)
    return [sch]


def is_int8_task(mod: tvm.IRModule) -> bool:
    """Whether a tuning task is built around an integer kernel."""
    return kernel_block(s_tir.Schedule(mod)) is not None


def _divisors(n: int, cap: int) -> list[int]:
    return [d for d in range(1, min(n, cap) + 1) if n % d == 0]


def _tile_decisions(trace: s_tir.Trace) -> tuple:
    """The register-tile decisions of a trace of the template."""
    return tuple(tuple(int(x) for x in trace.decisions[inst]) for inst in trace.insts
                 if inst.kind.name == "SamplePerfectTile")


def tile_grid(space: s_tir.Schedule, mod: tvm.IRModule, seen: set[tuple] = frozenset()) -> list[s_tir.Schedule]:
    """Every other register-tile choice of a design space, applied to ``mod``.

    Tiles whose accumulators fit in a stack (register) buffer come first, largest first;
    the space's own decisions (the default schedule, measured when tuning starts) and those
    in ``seen`` (measured by an earlier run) are left out.
    """
    sch = s_tir.Schedule(mod)
    max_accumulators = MAX_ACC_BYTES // block_isa(sch, kernel_block(sch)[0]).vector_bytes
    trace = space.trace
    samples = [inst for inst in trace.insts if inst.kind.name == "SamplePerfectTile"]
    defaults = _tile_decisions(trace)
    options = [[(ext // d, d) for d in _divisors(ext, int(inst.attrs[1]))]
               for inst, ext in zip(samples, (math.prod(d) for d in defaults))]
    combos = [c for c in itertools.product(*options) if c != defaults and c not in seen]
    combos.sort(key=lambda c: (math.prod(d[1] for d in c) > max_accumulators, -math.prod(d[1] for d in c)))
    schedules = []
    for combo in combos:
        candidate = trace
        for inst, decision in zip(samples, combo):
            candidate = candidate.with_decision(inst, list(decision), remove_postproc=True)
        sch = s_tir.Schedule(mod)
        try:
            candidate.apply_to_schedule(sch, remove_postproc=True)
        except (ScheduleError, tvm.TVMError):
            continue
        schedules.append(sch)
    return schedules


@derived_object
class GridSearch(PySearchStrategy):
    """Measure every point of the integer kernels' (small) design space once, across runs.

    Tasks whose grid was measured to the end are listed (by structural hash) in
    ``squeeze_grid.json`` beside the database: later runs skip them, even though the
    database may keep only each task's winner.
    """

    def __init__(self) -> None:
        self.mod: tvm.IRModule | None = None
        self.pending: list[s_tir.Schedule] = []
        self.per_round = 1
        self.marker: Path | None = None

    def _initialize_with_tune_context(self, context) -> None:
        self.mod = context.mod

    def _key(self) -> str:
        return f"{tvm_ffi.structural_hash(self.mod):x}"

    def _searched(self) -> list[str]:
        return json.loads(self.marker.read_text()) if self.marker and self.marker.is_file() else []

    def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None) -> None:
        self.per_round = num_trials_per_iter
        self.marker = Path(str(database.path_workload)).parent / GRID_FILE if database is not None else None
        self.pending = []
        if self._key() in self._searched():
            return
        seen = set()
        if database is not None and database.has_workload(self.mod):
            workload = database.commit_workload(self.mod)
            seen = {_tile_decisions(r.trace) for r in database.get_top_k(workload, 1 << 20)}
        self.pending = [s for space in design_spaces for s in tile_grid(space, self.mod, seen)][:max_trials]

    def post_tuning(self) -> None:
        if self.marker is not None and not self.pending and self._key() not in self._searched():
            tmp = self.marker.with_suffix(".tmp")
            tmp.write_text(json.dumps([*self._searched(), self._key()]))
            os.replace(tmp, self.marker)
        self.pending = []

    def generate_measure_candidates(self) -> list[MeasureCandidate] | None:
        if not self.pending:
            return None
        batch, self.pending = self.pending[:self.per_round], self.pending[self.per_round:]
        return [MeasureCandidate(sch, ArgInfo.from_entry_func(sch.mod, remove_preproc=True)) for sch in batch]

    def notify_runner_results(self, measure_candidates, results) -> None:
        pass

    def clone(self) -> "GridSearch":
        return GridSearch()


def search_strategy(mod: tvm.IRModule) -> GridSearch | None:
    """``TargetSpec.search_strategy`` hook: grid search for integer-kernel tasks."""
    return GridSearch() if is_int8_task(mod) else None


tvm.register_global_func(f"s_tir.meta_schedule.cpu.{RULE}", custom_rule, override=True)
