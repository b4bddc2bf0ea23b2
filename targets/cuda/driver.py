"""The CUDA driver as the compiler and the runtime see it.

TVM's CUDA runtime library (``libtvm_runtime_cuda.so``) links ``libcuda.so.1``. Where no NVIDIA
driver is installed it does not load, and ``tvm.compile`` then silently embeds CUDA *source*.
:func:`enable_cubin` loads it against a stand-in ``libcuda.so.1`` (``stub_libcuda.c``, built
once into the cache) and makes TVM compile with nvcc, so an artifact built on any machine
embeds cubin for its preset's architecture. :func:`open_device` is the runtime's side: the
GPU of the manifest's architecture, or one line saying what is missing.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

from compiler.errors import SqueezeError

STUB = Path(__file__).with_name("stub_libcuda.c")
RUNTIME_LIB = "tvm_runtime_cuda"


def _cache_dir() -> Path:
    return Path(os.environ.get("SQUEEZE_CACHE") or Path.home() / ".cache" / "squeeze") / "cuda"


def runtime_loaded() -> bool:
    """Whether TVM's CUDA runtime library is loaded in this process."""
    from tvm.base import _LOADED_LIBS

    return RUNTIME_LIB in _LOADED_LIBS


def _build_stub() -> Path:
    out = _cache_dir() / "libcuda.so.1"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(tmp), str(STUB)], check=True,
                       capture_output=True)
        os.replace(tmp, out)
    return out


def enable_cubin() -> None:
    """Make ``tvm.compile`` for CUDA embed nvcc-compiled cubin in this process (see the module doc).

    Raises SqueezeError (one line) when nvcc is missing.
    """
    if shutil.which("nvcc") is None:
        raise SqueezeError("nvcc not found: install the CUDA toolkit (nvcc on PATH) to compile for a CUDA target")
    os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")  # nvrtc would need the cuda-bindings package
    if runtime_loaded():
        return
    from tvm.base import _LOADED_LIBS
    from tvm_ffi.libinfo import load_lib_ctypes

    ctypes.CDLL(str(_build_stub()), mode=ctypes.RTLD_GLOBAL)  # satisfies libcuda.so.1 by its soname
    runtime_dir = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    _LOADED_LIBS[RUNTIME_LIB] = load_lib_ctypes(package="tvm", target_name=RUNTIME_LIB,
                                                extra_lib_paths=[runtime_dir], mode="RTLD_LOCAL")


def _driver_present() -> bool:
    """Whether a real ``libcuda.so.1`` loads (not :data:`STUB`'s stand-in)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return not hasattr(lib, "squeeze_stub_libcuda")


def open_device(arch: str, index: int = 0):
    """The CUDA device an artifact built for ``arch`` (``sm_80``) runs on.

    Raises SqueezeError, one line, when this machine has no driver, no GPU, or a GPU of
    another architecture (cubin runs only on its own major architecture and newer minors).
    """
    import tvm

    if not runtime_loaded() or not _driver_present():
        raise SqueezeError(f"artifact runs on a CUDA GPU ({arch}) and this machine has no NVIDIA driver "
                           "(libcuda.so.1 not found): run it on a machine with one, or with --rpc host:port")
    dev = tvm.cuda(index)
    if not dev.exist:
        raise SqueezeError(f"artifact runs on a CUDA GPU ({arch}) and no CUDA device is visible here: "
                           "check nvidia-smi / CUDA_VISIBLE_DEVICES, or run it with --rpc host:port")
    have = "sm_" + str(dev.compute_version).replace(".", "")
    if not compatible(arch, have):
        raise SqueezeError(f"artifact built for {arch}, this GPU ({dev.device_name}) is {have}: "
                           f"recompile with --target for {have}")
    return dev


def compatible(built: str, device: str) -> bool:
    """Whether cubin for ``built`` runs on a GPU of architecture ``device``: same major
    version, device minor at least the built one (``sm_80`` cubin runs on ``sm_86``)."""
    (bmaj, bmin), (dmaj, dmin) = (_version(a) for a in (built, device))
    return bmaj == dmaj and dmin >= bmin


def _version(arch: str) -> tuple[int, int]:
    digits = re.fullmatch(r"sm_(\d+)(\d)a?", arch)
    if digits is None:
        raise SqueezeError(f"bad CUDA architecture '{arch}': expected sm_XY, e.g. sm_80")
    return int(digits.group(1)), int(digits.group(2))
