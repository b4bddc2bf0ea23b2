"""Numerical check of tuned kernels: a record from a tuning database is used only if its
kernel computes what the untuned one computes.

``tensorize`` does not check that the operands it maps onto an instruction are contiguous,
and MetaSchedule's postprocs rewrite layouts: a record can be fast and wrong (FACTS.md: 94%
of outputs once). Each tuned PrimFunc is built alone and run on random inputs next to its
default schedule (or, without one, the unscheduled function); integer outputs must match
exactly, float outputs to a relative 1e-3. Verdicts are cached in the database directory
by structural hash, so a compile that reuses a database checks each record once. A kernel
for another machine is checked where it runs (``run``: ``squeeze tune`` through an RPC
tracker runs it on a board) and compiles use that cached verdict.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.target.codegen import llvm_get_cpu_features

from targets.host import host_cpu, host_triple, isa_extensions, triple_arch

log = logging.getLogger(__name__)
CACHE = "squeeze_verified.json"
FLOAT_RTOL = 1e-3

Scheduler = Callable[[tirx.PrimFunc, tvm.target.Target], Optional[s_tir.Schedule]]
# run(func, target, args) -> every argument after one call of func built for target
Runner = Callable[[tirx.PrimFunc, tvm.target.Target, list[np.ndarray]], list[np.ndarray]]


def _random_args(func: tirx.PrimFunc, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for param in func.params:
        buf = param if hasattr(param, "shape") else func.buffer_map[param]
        shape, dtype = [int(d) for d in buf.shape], np.dtype(str(buf.dtype))
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            lo, hi = (max(info.min, -1000), min(info.max, 1000)) if dtype.itemsize > 1 else (info.min, info.max)
            arrays.append(rng.integers(lo, hi, shape, endpoint=True).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def build_kernel(func: tirx.PrimFunc, target: tvm.target.Target) -> tvm.runtime.Executable:
    """``func`` alone, built for ``target`` as a module whose function is ``main``."""
    return tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)


def _run(func: tirx.PrimFunc, target: tvm.target.Target, args: list[np.ndarray]) -> list[np.ndarray]:
    lib = build_kernel(func, target).jit()
    tensors = [tvm.runtime.tensor(a.copy()) for a in args]
    lib["main"](*tensors)
    return [t.numpy() for t in tensors]


def same_results(tuned: tirx.PrimFunc, reference: tirx.PrimFunc, target: tvm.target.Target, seed: int = 0,
                 run: Runner = _run) -> bool:
    """Whether two schedules of one PrimFunc give the same outputs on random inputs (run by ``run``)."""
    args = _random_args(reference, seed)
    for got, want in zip(run(tuned, target, args), run(reference, target, args)):
        if np.issubdtype(want.dtype, np.floating):
            scale = max(float(np.nanmax(np.abs(want))) if want.size else 0.0, 1e-6)
            if not np.allclose(got, want, rtol=FLOAT_RTOL, atol=FLOAT_RTOL * scale, equal_nan=True):
                return False
        elif not np.array_equal(got, want):
            return False
    return True


def runs_here(target: tvm.target.Target) -> bool:
    """Whether code for ``target`` runs on this host: an LLVM CPU target for the host's
    architecture whose instruction-set extensions the host all has."""
    triple = str(target.attrs.get("mtriple") or host_triple())
    if target.kind.name != "llvm" or triple_arch(triple) != triple_arch(host_triple()):
        return False
    return set(isa_extensions(str(f) for f in llvm_get_cpu_features(target))) <= host_cpu()[1]


def check_tuned(untuned: tvm.IRModule, tuned: tvm.IRModule, target: tvm.target.Target,
                default: Scheduler | None, database: str | os.PathLike, run: Runner | None = None) -> tvm.IRModule:
    """Put back untuned, in ``tuned``, every PrimFunc that disagrees with its untuned version.

    Parameters
    ----------
    untuned, tuned : IRModule
        The module before and after applying the database.
    target : Target
        What both are built for. The check runs them, so without ``run`` it needs a target
        this host can run; records for other targets are used only with a verdict cached in
        ``database`` (from a check on the device), else the untuned kernel stays.
    default : callable, optional
        ``default(func, target) -> Schedule | None``, the target's default schedule, used
        as the reference (and faster than the unscheduled function).
    database : path
        The database directory, where verdicts are cached.
    run : callable, optional
        How a kernel runs where ``target`` runs (:data:`Runner`, e.g. on a board through
        RPC); default: built and run on this host, if it can.
    """
    cache_path = Path(database) / CACHE
    checkable = run is not None or runs_here(target)
    verdicts = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    for gvar, func in tuned.functions_items():
        before = untuned[gvar] if gvar in untuned.get_global_vars() else None
        if not isinstance(func, tirx.PrimFunc) or before is None or func.same_as(before):
            continue
        key = "-".join(f"{tvm_ffi.structural_hash(x):x}" for x in (func, before, target))
        if key not in verdicts and not checkable:
            # A cross-built kernel is checked where it runs; unchecked, its record is not used.
            log.warning("tuned %s for %s is not used: this host cannot run it to check it", gvar.name_hint,
                        target.attrs.get("mtriple", target.kind.name))
            tuned.update_func(gvar, before)
            continue
        if key not in verdicts:
            sch = default(before, target) if default is not None else None
            verdicts[key] = same_results(func, sch.mod["main"] if sch is not None else before, target,
                                         run=run or _run)
        if not verdicts[key]:
            log.warning("tuned %s disagrees with its untuned version: record ignored", gvar.name_hint)
            tuned.update_func(gvar, before)
    tmp = cache_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(verdicts, indent=0))
    os.replace(tmp, cache_path)
    return tuned
