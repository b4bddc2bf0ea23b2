"""MetaSchedule tuning of a Program's fused PrimFuncs into a reusable database directory."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir
from tvm.s_tir.meta_schedule.relax_integration import extract_tasks, extracted_tasks_to_tune_contexts

from targets import TargetSpec

from .build import fused_module
from .errors import SqueezeError
from .program import Program
from .verify import Runner, build_kernel, check_tuned

# Candidates measured per task per round; smaller budgets use smaller rounds (at least
# this few) so that every task gets some.
MAX_TRIALS_PER_ROUND = 64
MIN_TRIALS_PER_ROUND = 16
BUILD_TIMEOUT_S = 60.0
# Each candidate: one warm-up, then 3 timings of >= 50 ms each (records keep all three;
# MetaSchedule ranks by their mean), to damp the noise of a shared 2-core machine.
EVALUATOR = dict(number=3, repeat=3, min_repeat_ms=50)
# After the search, the best TOP_K records of each task and its default schedule are
# measured again, REMEASURE times in alternation, and only the fastest is kept.
TOP_K = 3
REMEASURE = 3
# An RPC tracker must answer within this many seconds; an RPC session (one measurement, or one
# kernel run of the device check) may last this long.
TRACKER_TIMEOUT_S = 10.0
SESSION_TIMEOUT_S = 120


def tune(
    program: Program,
    spec: TargetSpec,
    work_dir: str | os.PathLike,
    trials: int,
    progress: bool = True,
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
) -> Path:
    """Tune every fused PrimFunc of ``program`` for ``spec`` with MetaSchedule.

    The tasks come from the same module that :func:`compiler.build.lower` schedules, so
    ``lower(program, spec, work_dir)`` finds the records. An existing database in
    ``work_dir`` is reused and extended. After the search, each task's best records are
    re-measured against its default schedule (``spec.schedule_func``) and only the fastest
    is kept, so that a build from the database is not slower than the untuned one.

    Parameters
    ----------
    program : Program
        The model, after the compile's passes.
    spec : TargetSpec
        The target; tuning measures on this machine, so it must be the host.
    work_dir : str or PathLike
        The database directory (JSON records), created if missing.
    trials : int
        Global budget of measured candidates, shared by the tasks (gradient scheduler:
        more for the tasks that dominate the run time).
    progress : bool
        Print one line per task and per measured round.
    rpc_tracker, rpc_key : str, optional
        Measure on the devices registered under ``rpc_key`` at TVM's RPC tracker
        ``host:port`` (boards run ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``),
        as many candidates at a time as boards are registered; needed for a target this host
        cannot run. The kept kernels are then checked numerically on a board (as a compile
        checks them on this host otherwise) and the verdicts cached in ``work_dir``, where
        ``compiler.compile(..., tuning_db=work_dir)`` reads them: a kernel that disagrees with
        its untuned version is not used.

    Returns
    -------
    Path
        ``work_dir``.
    """
    runner, fleet = _runner(spec, rpc_tracker, rpc_key)  # fails before any work when nothing can measure
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    target = spec.target
    say = print if progress else (lambda *_: None)
    say(f"lowering the model for {spec.name} and extracting tuning tasks ...")
    mod = fused_module(program, spec)
    with target:
        tasks = extract_tasks(mod, target)
    # Measured records (the default schedules included) are not replayed as the search's
    # starting population: MetaSchedule's RewriteLayout postproc fails on the replayed
    # traces of schedules that already re-laid a weight.
    strategy = ms.search_strategy.EvolutionarySearch(init_measured_ratio=0.0)
    contexts, weights = extracted_tasks_to_tune_contexts(tasks, str(work_dir), strategy=strategy, seed=0)
    if spec.search_strategy is not None:
        loggers = get_loggers_from_work_dir(str(work_dir), [str(c.task_name) for c in contexts])
        contexts = [_with_strategy(ctx, spec.search_strategy(ctx.mod), log) for ctx, log in zip(contexts, loggers)]
    _quiet_console()
    database = ms.database.JSONDatabase(work_dir=str(work_dir))
    export = _export_function(spec.cross_compiler) if spec.cross_compiler else None  # None: MetaSchedule's own
    builder = ms.builder.LocalBuilder(f_build=_build_function(), f_export=export, timeout_sec=BUILD_TIMEOUT_S)
    names = [str(c.task_name) for c in contexts]
    say(f"tuning {len(contexts)} tasks, {trials} trials in all -> {work_dir}")
    per_round = max(MIN_TRIALS_PER_ROUND, min(MAX_TRIALS_PER_ROUND, trials // max(len(contexts), 1)))
    start = time.time()
    ms.tune.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=str(work_dir),
        max_trials_global=trials,
        num_trials_per_iter=per_round,
        builder=builder,
        runner=runner,
        database=database,
        cost_model="xgb",
        measure_callbacks=[*ms.MeasureCallback.create("default"), _Progress(names, say, start)],
    )
    say(f"search done in {time.time() - start:.0f} s; re-measuring the best candidates")
    seed = spec.schedule_func
    for name, verdict in _settle(contexts, target, seed, work_dir, builder, runner, spec.device):
        say(f"  {name}: {verdict}")
    if fleet is not None:
        say(_check_on_board(mod, spec, work_dir, fleet))
    say(f"tuning done in {time.time() - start:.0f} s")
    return work_dir


def _with_strategy(ctx: ms.TuneContext, strategy, logger: logging.Logger) -> ms.TuneContext:
    """``ctx`` searched with the target's own ``strategy`` for its task (unchanged if None)."""
    if strategy is None:
        return ctx
    return ms.TuneContext(mod=ctx.mod, target=ctx.target, space_generator=ctx.space_generator,
                          search_strategy=strategy, task_name=ctx.task_name, logger=logger,
                          rand_state=ctx.rand_state, num_threads=ctx.num_threads).clone()


def _runner(spec: TargetSpec, tracker: str | None, key: str | None) -> tuple[ms.Runner, ms.runner.RPCConfig | None]:
    """MetaSchedule's local runner for a target this host runs, else its RPC runner on the
    devices registered at TVM's RPC tracker (the fleet measures, one candidate per board at a
    time; nothing of ours in between), with the fleet's configuration (None: local)."""
    evaluator = ms.runner.EvaluatorConfig(**EVALUATOR)
    if tracker is None:
        if not spec.runs_on_host():
            raise SqueezeError(f"target {spec.name} ({spec.triple}) cannot be measured on this host: give "
                               "--rpc-tracker host:port --rpc-key KEY of boards running tvm.exec.rpc_server")
        return ms.runner.LocalRunner(evaluator_config=evaluator), None
    host, _, port = tracker.rpartition(":")
    if not host or not port.isdigit() or not key:
        raise SqueezeError(f"bad RPC tracker '{tracker}' or missing key: use --rpc-tracker host:port --rpc-key KEY")
    boards = _boards(host, int(port), key)
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key,
                                 session_timeout_sec=SESSION_TIMEOUT_S)
    runner = ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=boards,
                                 f_alloc_argument=_alloc_from_host())
    return runner, config


def _boards(host: str, port: int, key: str) -> int:
    """How many boards are registered under ``key`` at the RPC tracker ``host:port``.

    One line instead of a hang (TVM retries a refused tracker for 60 s, then every
    measurement waits for it) when no tracker answers within ``TRACKER_TIMEOUT_S`` or no
    board is registered under ``key``.
    """
    where, start = f"{host}:{port}", f"start one with python -m tvm.exec.rpc_tracker --host {host} --port {port}"
    try:
        socket.create_connection((host, port), timeout=TRACKER_TIMEOUT_S).close()
    except OSError as err:
        why = f"timed out after {TRACKER_TIMEOUT_S:g} s" if isinstance(err, TimeoutError) else err.strerror or err
        raise SqueezeError(f"cannot reach the RPC tracker at {where} ({why}): {start}") from None
    answer: dict = {}

    def ask() -> None:
        try:
            answer["summary"] = tvm.rpc.connect_tracker(host, port).summary()
        except (OSError, RuntimeError) as err:
            answer["error"] = err

    thread = threading.Thread(target=ask, daemon=True)  # a port that never answers must not hold the exit
    thread.start()
    thread.join(TRACKER_TIMEOUT_S)
    if "summary" not in answer:
        why = answer.get("error") or f"no answer in {TRACKER_TIMEOUT_S:g} s"
        raise SqueezeError(f"{where} is not answering as an RPC tracker ({why}): {start}")
    boards = sum(item["key"].split(":", 1)[-1] == key for item in answer["summary"]["server_info"])
    if not boards:
        raise SqueezeError(f"no board is registered under key '{key}' at the RPC tracker {where}: start them with "
                           f"python -m tvm.exec.rpc_server --tracker {where} --key {key}")
    return boards


def _check_on_board(mod: tvm.IRModule, spec: TargetSpec, work_dir: Path, fleet: ms.runner.RPCConfig) -> str:
    """Check the database's kernels for ``mod`` numerically on a board of the fleet, caching the
    verdicts a compile from ``work_dir`` reads (:func:`compiler.verify.check_tuned`); one line.
    A board lost meanwhile is one line too: unchecked records stay unused."""
    with spec.target:
        tuned = relax.transform.MetaScheduleApplyDatabase(str(work_dir))(mod)
        names = _tuned_names(mod, tuned)
        try:
            kept = _tuned_names(mod, check_tuned(mod, tuned, spec.target, spec.schedule_func, work_dir,
                                                 run=_on_board(fleet, spec)))
        except (RuntimeError, ValueError) as err:  # TVM's RPC errors; ValueError: the tracker is gone
            why = str(err).strip().splitlines()[-1]
            raise SqueezeError(f"the tuned kernels could not be checked on a board ({why}): compiles do not "
                               f"use them until a tune run with --tuning-db {work_dir} checks them") from None
    rejected = sorted(names - kept)
    verdict = f"{len(rejected)} disagree, not used: {', '.join(rejected)}" if rejected else "all agree"
    return f"checked {len(names)} tuned kernels on a board against their untuned versions: {verdict}"


def _tuned_names(untuned: tvm.IRModule, tuned: tvm.IRModule) -> set[str]:
    """The PrimFuncs of ``tuned`` that differ from their version in ``untuned``."""
    return {gvar.name_hint for gvar, func in tuned.functions_items()
            if isinstance(func, tirx.PrimFunc) and not func.same_as(untuned[gvar.name_hint])}


def _on_board(fleet: ms.runner.RPCConfig, spec: TargetSpec) -> Runner:
    """A :data:`compiler.verify.Runner` on a board of the fleet: the kernel is built and linked
    here with the target's cross compiler, then uploaded and run in a session of its own."""
    from tvm.support import cc

    def run(func: tirx.PrimFunc, target: tvm.target.Target, args: list[np.ndarray]) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="squeeze-check-") as tmp:
            path = os.path.join(tmp, "kernel.so")
            build_kernel(func, target).export_library(path, fcompile=cc.cross_compiler(spec.cross_compiler))
            session = fleet.connect_server()
            session.upload(path)
        kernel = session.load_module("kernel.so")
        device = session.device(spec.device, 0)
        tensors = [tvm.runtime.tensor(a, device=device) for a in args]
        kernel["main"](*tensors)
        return [t.numpy() for t in tensors]

    return run


def _alloc_from_host():
    """MetaSchedule's argument allocation on a board, with random data sent from this host:
    its default fills them with the board's ``tvm.contrib.random``, which a runtime-only TVM
    (``libtvm_runtime.so`` alone, or ``TVM_USE_RUNTIME_LIB=1``) does not register. A closure,
    pickled by value into the runner's workers."""

    def alloc(session, device, args_info, alloc_repeat: int) -> list:
        import numpy as np
        from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

        rng = np.random.default_rng(0)

        def fill(tensor) -> None:
            dtype = np.dtype(str(tensor.dtype))
            values = rng.integers(0, 8, tensor.shape) if dtype.kind in "iub" else rng.uniform(-1, 1, tensor.shape)
            tensor.copyfrom(values.astype(dtype))

        return alloc_argument_common(fill, device, args_info, alloc_repeat)

    return alloc


def _export_function(cross_compiler: str):
    """How a built candidate is linked into a shared library with the target's cross compiler
    (a closure, pickled by value into the builder workers)."""

    def export(mod: tvm.runtime.Module) -> str:
        import tempfile

        from tvm.support import cc

        path = os.path.join(tempfile.mkdtemp(prefix="squeeze-tune-"), "tuned.so")
        mod.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
        return path

    return export


def _settle(contexts, target, seed, work_dir: Path, builder, runner, device: str) -> list[tuple[str, str]]:
    """Keep, per task, the fastest of MetaSchedule's best records and the default schedule.

    Single measurements on a shared machine are noisy and MetaSchedule keeps the lowest
    one ever seen, so the ``TOP_K`` best records and the target's default schedule are
    re-measured together, ``REMEASURE`` times in alternation, and judged by their best
    time. The database then holds only the winner for each of these tasks, with its fresh
    timings: a tuned build is never slower than the untuned one by the judge's measure.

    Returns
    -------
    list of (str, str)
        Task name and a one-line verdict per task.

    Raises
    ------
    SqueezeError
        When not one candidate could be built and measured (e.g. a board that lacks what
        the measurement needs): the first error's last line.
    """
    database = ms.database.JSONDatabase(work_dir=str(work_dir))
    entries = []  # (task, workload, [(label, candidate)])
    for ctx in contexts:
        workload = database.commit_workload(ctx.mod)
        candidates = [(f"tuned #{k + 1}", r.as_measure_candidate())
                      for k, r in enumerate(database.get_top_k(workload, TOP_K))]
        default = seed(ctx.mod["main"], target) if seed is not None else None
        if default is not None:
            args = ms.arg_info.ArgInfo.from_entry_func(default.mod, remove_preproc=True)
            candidates.append(("default", ms.MeasureCandidate(default, args)))
        entries.append((ctx, workload, candidates))
    flat = [c for _, _, cands in entries for _, c in cands]
    built = builder.build([ms.builder.BuilderInput(c.sch.mod, target) for c in flat])
    ok = [i for i, b in enumerate(built) if not b.error_msg]
    errors = [str(b.error_msg) for b in built if b.error_msg]
    best = {i: float("inf") for i in ok}
    for _ in range(REMEASURE):
        futures = runner.run([ms.runner.RunnerInput(built[i].artifact_path, device, flat[i].args_info) for i in ok])
        for i, future in zip(ok, futures):
            result = future.result()
            if not result.error_msg and result.run_secs:
                best[i] = min(best[i], *(float(x) for x in result.run_secs))
            errors += [str(result.error_msg)] if result.error_msg else []
    for b in built:
        if b.artifact_path:
            shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
    if flat and min(best.values(), default=float("inf")) == float("inf"):
        raise SqueezeError(f"no candidate could be measured: {errors[0].strip().splitlines()[-1]}")

    winners, verdicts, index = [], [], 0
    for ctx, workload, candidates in entries:
        times = [best.get(index + k, float("inf")) for k in range(len(candidates))]
        index += len(candidates)
        if not candidates or min(times) == float("inf"):
            continue
        k = times.index(min(times))
        cand = candidates[k][1]
        winners.append((workload, ms.database.TuningRecord(cand.sch.trace, workload, [min(times)], target,
                                                          cand.args_info)))
        shown = ", ".join(f"{label} {t * 1e6:.1f} us" for (label, _), t in zip(candidates, times))
        verdicts.append((str(ctx.task_name), f"{shown} -> {candidates[k][0]}"))
    _rewrite_database(work_dir, database, winners)
    return verdicts


def _rewrite_database(work_dir: Path, database, winners) -> None:
    """Replace the records of the winners' workloads by the winners; keep all others."""
    settled = {_workload_key(w) for w, _ in winners}
    kept = [r for r in database.get_all_tuning_records() if _workload_key(r.workload) not in settled]
    kept += [r for _, r in winners]
    for name in ("database_workload.json", "database_tuning_record.json"):
        (work_dir / name).unlink(missing_ok=True)
    fresh = ms.database.JSONDatabase(work_dir=str(work_dir))
    for r in kept:
        workload = fresh.commit_workload(r.workload.mod)
        fresh.commit_tuning_record(ms.database.TuningRecord(r.trace, workload, r.run_secs, r.target, r.args_info))


def _workload_key(workload) -> str:
    """The structural hash MetaSchedule files a workload under."""
    return str(workload.as_json()[0])


def _quiet_console() -> None:
    """Keep MetaSchedule's per-round tables in ``work_dir/logs`` only, off the console."""
    for handler in logging.getLogger("tvm.s_tir.meta_schedule").handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)


def _build_function():
    """MetaSchedule's default build minus its ``import tvm.s_tir.tensor_intrin``.

    That import takes ~18 s in every fresh builder process (one pool per round), which
    made builds time out on 2 cores; fp32 candidates use no tensor intrinsics. Returned as
    a closure so that it is pickled by value into the workers.
    """

    def build(mod: tvm.IRModule, target: tvm.target.Target, _params) -> tvm.runtime.Module:
        from tvm.driver import build as tvm_build
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)

    return build


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """Prints, after each measured round, the task's best latency and the trials so far."""

    def __init__(self, names: list[str], say, start: float) -> None:
        self.names, self.say, self.start = names, say, start
        self.best: dict[int, float] = {}
        self.trials: dict[int, int] = {}

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        secs = [min(float(s) for s in r.run_secs) for r in runner_results if not r.error_msg and r.run_secs]
        self.trials[task_id] = self.trials.get(task_id, 0) + len(measure_candidates)
        if secs:
            self.best[task_id] = min(self.best.get(task_id, float("inf")), min(secs))
        best = self.best.get(task_id)
        shown = f"{best * 1e6:.1f} us" if best is not None else "no valid candidate yet"
        self.say(
            f"  [{time.time() - self.start:5.0f} s, {sum(self.trials.values())} trials] "
            f"{self.names[task_id]}: {self.trials[task_id]} trials, best {shown}"
        )
