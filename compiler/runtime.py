"""Run artifacts locally or on a TVM RPC server, with inputs validated against the manifest."""
from __future__ import annotations

import os
import statistics
import tempfile
import threading
from typing import Mapping

import numpy as np
import tvm
from tvm import relax

from targets import host_target, open_device
from targets.host import host_cpu, host_triple, isa_extensions, triple_arch

from .artifact import Artifact, Manifest
from .errors import SqueezeError
from .program import TensorSpec, batch_of


def check_host(manifest: Manifest) -> None:
    """Refuse, in one line, an artifact this machine cannot run: another architecture, a
    device it lacks, or instruction-set extensions its CPU does not have.

    Only real ISA extensions count (older manifests also listed LLVM tuning flags).
    """
    record, host = manifest.target, triple_arch(host_triple())
    arch = record.get("arch") or triple_arch(record.get("triple", host_triple()))
    if arch != host:
        raise SqueezeError(
            f"artifact built for {arch} ({record.get('triple', arch)}, target {record.get('name')}), this host is "
            f"{host}: run it on an {arch} board with --rpc host:port, or recompile for this host")
    if record.get("device", "cpu") != "cpu":
        return  # its host code is generic for the architecture; the device is checked when opened
    missing = sorted(set(isa_extensions(record.get("isa", []))) - host_cpu()[1])
    if missing:
        raise SqueezeError(
            f"artifact needs CPU extensions this host lacks ({', '.join(missing)}): "
            f"recompile for this host (--target {host_target().name}) or run it where they exist with --rpc")


def _connect(rpc: str):
    host, _, port = rpc.rpartition(":")
    if not host or not port.isdigit():
        raise SqueezeError(f"bad RPC address '{rpc}': use host:port")
    try:
        return tvm.rpc.connect(host, int(port))
    except Exception as err:
        raise SqueezeError(f"cannot reach RPC server {rpc} ({str(err).splitlines()[-1]}): start one with "
                           "`python -m tvm.exec.rpc_server`") from None


# dtypes numpy reads and writes in place through DLPack (not bfloat16, float8, int4)
_DLPACK_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                            "float16", "float32", "float64"})
_POOL_THREADS = tvm.get_global_func("runtime.NumThreads")  # of the calling thread's TVM pool
_CONFIG_POOL = tvm.get_global_func("runtime.config_threadpool")
_BIG_CORES = 1  # the pool's default affinity mode (ThreadGroup::kBig)
SERIAL_CHECK_MS = 1.0  # a model taking at most this per call is timed on one thread at load
_pool = threading.local()  # .threads: what this module last set the calling thread's pool to


def _set_threads(threads: int) -> None:
    """Make the calling thread's TVM pool run ``threads`` threads, 0 for its own count
    (``TVM_NUM_THREADS``, at most the cores); only a change reconfigures it."""
    if getattr(_pool, "threads", 0) != threads:
        _CONFIG_POOL(_BIG_CORES, threads)
        _pool.threads = threads


def _fastest_threads(vm: relax.VirtualMachine, device, args: list) -> int:
    """1, or 0 for the pool's own count: whichever runs ``main`` on ``args`` faster here.

    Every parallel kernel hands work to the pool and waits for it; on a model of small kernels
    that costs more than the other cores gain (the bundled 28x28 ResNet-8 in INT8, 13 kernels:
    ~21 µs on one thread, ~45 µs on two of this 2-core VM). A model taking more than
    ``SERIAL_CHECK_MS`` for a call on one thread (after a warm-up call; one thread, as a busy
    machine can stall the pool's pinned workers for milliseconds) keeps the pool's count;
    smaller ones are timed alternately on both, best of six samples each (~30 ms in all).
    """
    before = getattr(_pool, "threads", 0)
    try:
        _set_threads(0)
        if _POOL_THREADS() == 1:
            return 0
        _set_threads(1)
        serial = vm.time_evaluator("main", device, number=1, repeat=1)(*args).mean
        if serial > SERIAL_CHECK_MS / 1e3:
            return 0
        number, best = max(1, int(1e-3 / serial)), {}
        for n in (0, 1) * 3:
            _set_threads(n)
            timer = vm.time_evaluator("main", device, number=number, repeat=2, min_repeat_ms=0)
            best[n] = min([best.get(n, float("inf")), *timer(*args).results])
        return 1 if best[1] < best[0] else 0
    finally:
        _set_threads(before)


class _Build:
    """One batch size's library in a VM with the per-call work done once: ``main`` looked up,
    input buffers allocated (a fresh device tensor per call costs page faults, 0.04 ms a call
    for one 224x224 image) and, on the local CPU, numpy views of them (``Tensor.copyfrom`` and
    ``Tensor.numpy`` spend ~8 µs each in Python checks, a numpy copy through DLPack < 1 µs) and
    the thread count it runs fastest with (``threads``: 1, 0 for the pool's own, None over RPC).
    ``weights``: the arrays ``main`` takes after the inputs (weights stored outside the library),
    copied to the device once and passed to every call."""

    def __init__(self, lib, device, inputs: list[TensorSpec], outputs: list[TensorSpec], local: bool,
                 weights: list[np.ndarray] = ()):
        self.vm = relax.VirtualMachine(lib, device)
        self.main = self.vm["main"]
        self.inputs, self.outputs = inputs, outputs
        self.shapes = [tuple(s.shape) for s in inputs]
        self.dtypes = [np.dtype(s.dtype) for s in inputs]
        self.buffers = [tvm.runtime.empty(s.shape, s.dtype, device) for s in inputs]
        self._views = [np.from_dlpack(b) if local and s.dtype in _DLPACK_DTYPES else None
                       for s, b in zip(inputs, self.buffers)]
        self._host = [local and s.dtype in _DLPACK_DTYPES for s in outputs]
        self.weights = [tvm.runtime.tensor(w, device) for w in weights]
        self.threads = None
        if local:
            rng = np.random.default_rng(0)
            args = self.fill([_random(s, rng) for s in inputs])
            self.threads = _fastest_threads(self.vm, device, args)

    def fill(self, arrays: list[np.ndarray]) -> list:
        """Copy validated ``arrays`` (any strides) into the input buffers; returns the arguments
        of ``main``: the buffers, then the weights."""
        for buffer, view, arr in zip(self.buffers, self._views, arrays):
            if view is None:
                buffer.copyfrom(np.ascontiguousarray(arr))
            else:
                np.copyto(view, arr)
        return self.buffers + self.weights

    def fetch(self, result) -> dict[str, np.ndarray]:
        """``{output name: fresh numpy array}`` of what ``main`` returned."""
        results = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
        return {spec.name: np.from_dlpack(r).copy() if host else r.numpy()
                for spec, host, r in zip(self.outputs, self._host, results)}


class Module:
    """A loaded, runnable model.

    Use :func:`compiler.load` to create one. A multi-batch artifact (``--batch 1,8,32``)
    runs the library of the batch size its inputs have (their leading dim). Locally, each call
    sets the calling thread's TVM pool to the thread count its library ran fastest with at load:
    one or the pool's own (``TVM_NUM_THREADS``), see :func:`_fastest_threads`.
    """

    def __init__(self, artifact: Artifact, rpc: str | None = None):
        self.manifest = artifact.manifest
        self._tmp = tempfile.TemporaryDirectory(prefix="squeeze-")
        kind = self.manifest.target.get("device", "cpu")
        if rpc is None:
            check_host(self.manifest)
            self.device = tvm.cpu() if kind == "cpu" else open_device(self.manifest.target)
        else:
            self.session = _connect(rpc)
            self.device = self.session.device(kind, 0)
        self._builds: dict[int, _Build] = {}
        lifted = artifact.lifted_weights()  # decoded once
        for name, inputs, outputs in self.manifest.builds():
            lib_path = os.path.join(self._tmp.name, name)
            with open(lib_path, "wb") as f:
                f.write(artifact.library_of(name))
            if rpc is None:
                lib = tvm.runtime.load_module(lib_path)
            else:
                self.session.upload(lib_path)
                lib = self.session.load_module(name)
            build = _Build(lib, self.device, inputs, outputs, local=rpc is None, weights=lifted[name])
            if not self._builds:
                self._default = build
            self._builds[batch_of(inputs)] = build
        self._names = frozenset(self.input_names)
        self._lock = threading.Lock()  # one call at a time: the input buffers are shared

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.manifest.inputs]

    @property
    def batches(self) -> list[int]:
        """The batch sizes this artifact holds (one library each), the default first."""
        return list(self._builds)

    def _pick(self, inputs: Mapping[str, np.ndarray]) -> _Build:
        """The build for the leading dim of ``inputs`` (the default one for a single-batch artifact)."""
        if not self.manifest.batches:
            return self._default
        spec = self.manifest.inputs[0]
        arr = np.asarray(inputs[spec.name])
        batch = int(arr.shape[0]) if arr.ndim else None
        if batch not in self._builds:
            raise SqueezeError(
                f"input '{spec.name}' has batch {batch} (shape {list(arr.shape)}), the artifact holds batches "
                f"{', '.join(map(str, self.batches))}: split or pad it to one of them, or recompile with --batch")
        return self._builds[batch]

    def _arguments(self, inputs: Mapping[str, np.ndarray]) -> tuple[_Build, list]:
        """The build to run and its input buffers, filled with ``inputs`` once every one is validated
        (and the calling thread's pool set to the build's thread count)."""
        if inputs.keys() != self._names:
            names, expected = set(inputs), self.input_names
            missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
            raise SqueezeError(
                f"inputs do not match the model: missing {missing}, unexpected {extra}: "
                f"give exactly {expected}"
            )
        build = self._pick(inputs)
        arrays = []
        for spec, shape, dtype in zip(build.inputs, build.shapes, build.dtypes):
            arr = np.asarray(inputs[spec.name])
            if arr.shape != shape:
                raise SqueezeError(
                    f"input '{spec.name}' has shape {list(arr.shape)}, the model expects {list(spec.shape)}: "
                    "reshape it or recompile with --input-shape"
                )
            if arr.dtype != dtype:
                raise SqueezeError(
                    f"input '{spec.name}' has dtype {arr.dtype}, the model expects {spec.dtype}: convert it"
                )
            arrays.append(arr)
        if build.threads is not None:
            _set_threads(build.threads)
        return build, build.fill(arrays)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns ``{output name: array}``, arrays of their own (a later call leaves them be)."""
        with self._lock:
            build, args = self._arguments(inputs)
            return build.fetch(build.main(*args))

    def benchmark(self, inputs: Mapping[str, np.ndarray] | None = None, repeat: int = 20,
                  number: int = 1, warmup: int = 3) -> dict:
        """Time ``main`` (of the batch ``inputs`` have; default: random inputs of the default
        batch); returns median/mean/std/min/max in milliseconds and the samples."""
        if inputs is None:
            inputs = random_inputs(self.manifest)
        with self._lock:
            build, args = self._arguments(inputs)
            timer = build.vm.time_evaluator("main", self.device, number=number, repeat=repeat,
                                            min_repeat_ms=0, cooldown_interval_ms=0)
            for _ in range(warmup):
                build.main(*args)
            samples = [t * 1e3 for t in timer(*args).results]
        return {
            "median_ms": statistics.median(samples),
            "mean_ms": statistics.fmean(samples),
            "std_ms": statistics.pstdev(samples),
            "min_ms": min(samples),
            "max_ms": max(samples),
            "samples_ms": samples,
        }

    def profile(self, inputs: Mapping[str, np.ndarray] | None = None) -> list[dict]:
        """Per-kernel times of one run (see :func:`compiler.profile.profile`), in call order."""
        from .profile import profile

        if inputs is None:
            inputs = random_inputs(self.manifest)
        with self._lock:
            build, args = self._arguments(inputs)
            return profile(build.vm, args, self.manifest.summary.get("kernels", {}))


def random_inputs(manifest: Manifest, seed: int = 0, batch: int | None = None) -> dict[str, np.ndarray]:
    """Random inputs matching the manifest (normal floats, small integers), of the default batch
    or of ``batch`` (one the artifact holds)."""
    rng = np.random.default_rng(seed)
    specs = manifest.inputs
    if batch is not None:
        held = {batch_of(inputs): inputs for _, inputs, _ in manifest.builds()}
        if batch not in held:
            raise SqueezeError(f"the artifact holds no batch {batch}: choose one of "
                               f"{', '.join(map(str, held))}, or recompile with --batch")
        specs = held[batch]
    return {spec.name: _random(spec, rng) for spec in specs}


def _random(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """A random array for ``spec``: normal floats or small integers."""
    if np.issubdtype(np.dtype(spec.dtype), np.floating):
        return rng.standard_normal(spec.shape).astype(spec.dtype)
    return rng.integers(0, 8, spec.shape).astype(spec.dtype)
