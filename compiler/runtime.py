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

from targets import host_target
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
        raise SqueezeError(f"artifact runs on a {record['device']} device, this runtime opens the CPU only: "
                           "recompile for a CPU target")
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


class _Build:
    """One batch size's library in a VM, with input buffers allocated once: a fresh device
    tensor per call costs page faults (0.04 ms a call for one 224x224 image) that show on
    small or pruned models."""

    def __init__(self, lib, device, inputs: list[TensorSpec], outputs: list[TensorSpec]):
        self.vm = relax.VirtualMachine(lib, device)
        self.inputs, self.outputs = inputs, outputs
        self.buffers = [tvm.runtime.empty(s.shape, s.dtype, device) for s in inputs]


class Module:
    """A loaded, runnable model.

    Use :func:`compiler.load` to create one. A multi-batch artifact (``--batch 1,8,32``)
    runs the library of the batch size its inputs have (their leading dim).
    """

    def __init__(self, artifact: Artifact, rpc: str | None = None):
        self.manifest = artifact.manifest
        self._tmp = tempfile.TemporaryDirectory(prefix="squeeze-")
        if rpc is None:
            check_host(self.manifest)
            self.device = tvm.cpu()
        else:
            self.session = _connect(rpc)
            self.device = self.session.cpu()
        self._builds: dict[int, _Build] = {}
        for name, inputs, outputs in self.manifest.builds():
            lib_path = os.path.join(self._tmp.name, name)
            with open(lib_path, "wb") as f:
                f.write(artifact.library_of(name))
            if rpc is None:
                lib = tvm.runtime.load_module(lib_path)
            else:
                self.session.upload(lib_path)
                lib = self.session.load_module(name)
            build = _Build(lib, self.device, inputs, outputs)
            if not self._builds:
                self._default = build
            self._builds[batch_of(inputs)] = build
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
        """The build to run and its input buffers, filled with ``inputs`` once every one is validated."""
        names = set(inputs)
        expected = self.input_names
        if names != set(expected):
            missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
            raise SqueezeError(
                f"inputs do not match the model: missing {missing}, unexpected {extra}: "
                f"give exactly {expected}"
            )
        build = self._pick(inputs)
        arrays = []
        for spec in build.inputs:
            arr = np.asarray(inputs[spec.name])
            if tuple(arr.shape) != spec.shape:
                raise SqueezeError(
                    f"input '{spec.name}' has shape {list(arr.shape)}, the model expects {list(spec.shape)}: "
                    "reshape it or recompile with --input-shape"
                )
            if arr.dtype != np.dtype(spec.dtype):
                raise SqueezeError(
                    f"input '{spec.name}' has dtype {arr.dtype}, the model expects {spec.dtype}: convert it"
                )
            arrays.append(arr)
        for buffer, arr in zip(build.buffers, arrays):
            buffer.copyfrom(np.ascontiguousarray(arr))
        return build, build.buffers

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns ``{output name: array}``."""
        with self._lock:
            build, args = self._arguments(inputs)
            result = build.vm["main"](*args)
            results = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
            return {spec.name: r.numpy() for spec, r in zip(build.outputs, results)}

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
                build.vm["main"](*args)
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
    out = {}
    for spec in specs:
        if np.issubdtype(np.dtype(spec.dtype), np.floating):
            out[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
        else:
            out[spec.name] = rng.integers(0, 8, spec.shape).astype(spec.dtype)
    return out
