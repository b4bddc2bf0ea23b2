"""An AArch64 Python with the TVM runtime, run under ``qemu-aarch64``: whole models on an emulated board.

``python tests/arm_sysroot.py`` (``make arm-sysroot``) builds ``$SQUEEZE_CACHE/arm64-sysroot/``:
Debian's arm64 ``python3.11`` and the libraries it needs (``apt-get download``, ``dpkg -x``),
the aarch64 wheels of the TVM runtime this Squeeze compiles with and of numpy unpacked into
``site-packages/`` (``libtvm_compiler.so`` left out: the runtime is what a board needs), and
``python``, a wrapper running that interpreter under ``qemu-aarch64 -L <sysroot>``. The wrapper
makes ``sys.executable`` itself (``sitecustomize.py``), so ``python -m tvm.exec.rpc_server``,
which re-executes its interpreter, works without binfmt_misc. Downloads are cached beside the
sysroot; a build goes to a temporary folder renamed when complete, and a complete one is reused.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

# python3.11 (minimal + stdlib) with its libraries, libstdc++ for the TVM runtime
DEB_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libgcc-s1", "libstdc++6",
    "gcc-12-base", "libexpat1", "zlib1g", "libbz2-1.0", "libcrypt1", "libdb5.3", "libffi8", "liblzma5",
    "libncursesw6", "libtinfo6", "libnsl2", "libtirpc3", "libgssapi-krb5-2", "libk5crypto3", "libkeyutils1",
    "libkrb5-3", "libkrb5support0", "libcom-err2", "libreadline8", "libsqlite3-0", "libssl3", "libuuid1",
)
PYTHON_VERSION = "3.11"
# manylinux tags Debian 12 (glibc 2.36) runs; pip does not widen an explicit --platform to older ones
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
SKIPPED = ("tvm/lib/libtvm_compiler.so",)
STAMP = ".squeeze-sysroot"
WRAPPER = """#!/bin/sh
# Debian arm64 python{version} under qemu-aarch64 (built by tests/arm_sysroot.py)
ROOT="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$ROOT/site-packages" PYTHONNOUSERSITE=1 TVM_USE_RUNTIME_LIB=1 SQUEEZE_ARM_PYTHON="$ROOT/python"
exec qemu-aarch64 -L "$ROOT" "$ROOT/usr/bin/python{version}" "$@"
"""
SITECUSTOMIZE = ('import os, sys\n'
                 '# the qemu wrapper, so that a process re-executing its interpreter runs under emulation too\n'
                 'sys.executable = os.environ.get("SQUEEZE_ARM_PYTHON", sys.executable)\n')


class SysrootError(Exception):
    """A step that failed, in one line with the fix."""


def default_root() -> Path:
    """``$SQUEEZE_CACHE/arm64-sysroot`` (``~/.cache/squeeze`` without ``SQUEEZE_CACHE``)."""
    return Path(os.environ.get("SQUEEZE_CACHE") or Path.home() / ".cache" / "squeeze") / "arm64-sysroot"


def wheels() -> tuple[str, ...]:
    """The pinned wheels: the TVM runtime and numpy this Squeeze runs with, and the RPC server's needs."""
    pins = [f"{p}=={importlib.metadata.version(p)}" for p in ("apache-tvm", "apache-tvm-ffi", "numpy")]
    return (*pins, "psutil", "cloudpickle")


def _spec() -> str:
    spec = (DEB_PACKAGES, wheels(), PLATFORMS, SKIPPED, WRAPPER, SITECUSTOMIZE)
    return hashlib.sha256(repr(spec).encode()).hexdigest()


def python(root: Path | None = None) -> Path | None:
    """The wrapper of a complete sysroot at ``root`` (default :func:`default_root`), else None."""
    root = root or default_root()
    ok = (root / STAMP).is_file() and (root / STAMP).read_text() == _spec() and shutil.which("qemu-aarch64")
    return root / "python" if ok else None


def _log(start: float, line: str) -> None:
    print(f"arm-sysroot [{time.monotonic() - start:5.1f}s] {line}", flush=True)


def _run(cmd: list[str], what: str, fix: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise SysrootError(f"{what} failed ({lines[-1].strip() if lines else f'exit {proc.returncode}'}): {fix}")
    return proc.stdout


def _debs(downloads: Path, start: float) -> list[Path]:
    """The arm64 packages, downloaded once into ``downloads``."""
    if "arm64" not in _run(["dpkg", "--print-foreign-architectures"], "dpkg", "install dpkg").split():
        if os.geteuid() != 0:
            raise SysrootError("the arm64 architecture is not enabled: run as root `dpkg --add-architecture arm64 "
                               "&& apt-get update`, then again")
        _log(start, "dpkg --add-architecture arm64; apt-get update")
        _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64", "run as root")
        _run(["apt-get", "update", "-qq"], "apt-get update", "check the network and /etc/apt/sources.list")
    downloads.mkdir(parents=True, exist_ok=True)
    have = {p.name.split("_")[0] for p in downloads.glob("*_arm64.deb")}
    missing = [p for p in DEB_PACKAGES if p not in have]
    if missing:
        _log(start, f"apt-get download {len(missing)} arm64 packages")
        cmd = ["apt-get", "download", *(f"{p}:arm64" for p in missing)]
        try:
            _run(cmd, "apt-get download", "", cwd=downloads)
        except SysrootError:  # arm64 lists may be missing or stale
            _log(start, "apt-get update")
            _run(["apt-get", "update", "-qq"], "apt-get update", "check the network (run as root)")
            _run(cmd, "apt-get download", "check the network and that Debian 12 (bookworm) sources are configured",
                 cwd=downloads)
    return sorted(p for p in downloads.glob("*_arm64.deb") if p.name.split("_")[0] in DEB_PACKAGES)


def _wheels(downloads: Path, start: float) -> list[Path]:
    """The aarch64 wheels, downloaded once into ``downloads``."""
    _log(start, f"pip download {' '.join(wheels())} (aarch64)")
    _run([sys.executable, "-m", "pip", "download", "-q", "--dest", str(downloads), "--only-binary=:all:",
          *(f"--platform={p}" for p in PLATFORMS), "--python-version", PYTHON_VERSION, "--implementation", "cp",
          *wheels()],
         "pip download of the aarch64 wheels", "check the network (pypi.org) and the pins")
    return sorted(downloads.glob("*.whl"))


def build(root: Path | None = None) -> Path:
    """Build the sysroot at ``root`` (default :func:`default_root`) unless complete; returns its wrapper."""
    root = (root or default_root()).resolve()
    start = time.monotonic()
    if python(root):
        _log(start, f"{root} is up to date")
        return root / "python"
    if shutil.which("qemu-aarch64") is None:
        raise SysrootError("qemu-aarch64 not found: install it (Debian: apt-get install qemu-user)")
    downloads = root.parent / "arm64-downloads"
    debs = _debs(downloads / "debs", start)
    whls = _wheels(downloads / "wheels", start)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _log(start, f"dpkg -x {len(debs)} packages")
        for deb in debs:
            _run(["dpkg", "-x", str(deb), str(tmp)], f"dpkg -x {deb.name}", f"delete {deb} and run again")
        site = tmp / "site-packages"
        _log(start, f"unpacking {len(whls)} wheels into site-packages/")
        for whl in whls:
            with zipfile.ZipFile(whl) as z:
                z.extractall(site, [n for n in z.namelist() if n not in SKIPPED])
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        wrapper = tmp / "python"
        wrapper.write_text(WRAPPER.format(version=PYTHON_VERSION))
        wrapper.chmod(0o755)
        _log(start, "checking: import tvm, numpy under qemu-aarch64")
        _run([str(wrapper), "-c", "import numpy, tvm.runtime.vm"], "importing tvm under qemu-aarch64",
             f"delete {downloads} and run again")
        (tmp / STAMP).write_text(_spec())
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    _log(start, f"done: {root} ({size / 1e6:.0f} MB); run {root / 'python'}")
    return root / "python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help=f"sysroot folder (default {default_root()})")
    args = parser.parse_args()
    try:
        build(args.root)
    except SysrootError as err:
        print(f"arm-sysroot: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
