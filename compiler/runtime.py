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

from .artifact import LIBRARY, Artifact, Manifest
from .errors import SqueezeError


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


class Module:
    """A loaded, runnable model.

    Use :func:`compiler.load` to create one.
    """

    def __init__(self, artifact: Artifact, rpc: str | None = None):
        self.manifest = artifact.manifest
        self._tmp = tempfile.TemporaryDirectory(prefix="squeeze-")
        lib_path = os.path.join(self._tmp.name, LIBRARY)
        with open(lib_path, "wb") as f:
            f.write(artifact.library)
        if rpc is None:
            check_host(self.manifest)
            lib, self.device = tvm.runtime.load_module(lib_path), tvm.cpu()
        else:
            self.session = _connect(rpc)
            self.session.upload(lib_path)
            lib, self.device = self.session.load_module(LIBRARY), self.session.cpu()
        self._vm = relax.VirtualMachine(lib, self.device)
        # Inputs are copied into buffers allocated once: a fresh device tensor per call costs
        # page faults (0.04 ms a call for one 224x224 image) that show on small or pruned models.
        self._inputs = [tvm.runtime.empty(s.shape, s.dtype, self.device) for s in self.manifest.inputs]
        self._lock = threading.Lock()  # one call at a time: the input buffers are shared

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.manifest.inputs]

    def _arguments(self, inputs: Mapping[str, np.ndarray]) -> list:
        """The input buffers, filled with ``inputs`` once every one of them is validated."""
        names = set(inputs)
        expected = self.input_names
        if names != set(expected):
            missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
            raise SqueezeError(
                f"inputs do not match the model: missing {missing}, unexpected {extra}: "
                f"give exactly {expected}"
            )
        arrays = []
        for spec in self.manifest.inputs:
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
        for buffer, arr in zip(self._inputs, arrays):
            buffer.copyfrom(np.ascontiguousarray(arr))
        return self._inputs

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns ``{output name: array}``."""
        with self._lock:
            result = self._vm["main"](*self._arguments(inputs))
            results = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
            return {spec.name: r.numpy() for spec, r in zip(self.manifest.outputs, results)}

    def benchmark(self, inputs: Mapping[str, np.ndarray] | None = None, repeat: int = 20,
                  number: int = 1, warmup: int = 3) -> dict:
        """Time ``main``; returns median/mean/std/min/max in milliseconds and the samples."""
        if inputs is None:
            inputs = random_inputs(self.manifest)
        timer = self._vm.time_evaluator("main", self.device, number=number, repeat=repeat,
                                        min_repeat_ms=0, cooldown_interval_ms=0)
        with self._lock:
            args = self._arguments(inputs)
            for _ in range(warmup):
                self._vm["main"](*args)
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
            return profile(self._vm, self._arguments(inputs), self.manifest.summary.get("kernels", {}))


def random_inputs(manifest: Manifest, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs matching the manifest (normal floats, small integers)."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in manifest.inputs:
        if np.issubdtype(np.dtype(spec.dtype), np.floating):
            out[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
        else:
            out[spec.name] = rng.integers(0, 8, spec.shape).astype(spec.dtype)
    return out
