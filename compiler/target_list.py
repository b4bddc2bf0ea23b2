"""``squeeze targets``: the listing, kept in the cache so that it prints without importing TVM.

Building the listing imports TVM and every target (2.5–5 s on 2 cores). What it prints depends
only on Squeeze's and TVM's versions, the targets' sources, this host's CPU and thread count,
so the text is stored under a key of exactly those and reused while they are unchanged.
"""
from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

from .atomic import atomic_path

_ROOT = Path(__file__).resolve().parents[1]


def _key() -> str:
    from . import __version__

    parts = [__version__, _version("apache-tvm"), os.environ.get("TVM_NUM_THREADS", ""), str(os.cpu_count())]
    try:
        parts.append(next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")))
    except (OSError, StopIteration):
        parts.append(os.uname().machine)
    for path in sorted((_ROOT / "targets").rglob("*.py")):
        parts.append(f"{path.relative_to(_ROOT)}:{path.stat().st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _build() -> str:
    from targets import get_target, target_names

    lines = []
    for name in target_names():
        spec = get_target(name)
        ops = ", ".join(map(str, spec.accelerates)) or "none (generic TVM lowering)"
        lines += [f"{name:10s} {spec.description}", f"{'':10s} target: {spec.target}", f"{'':10s} accelerates: {ops}"]
    return "\n".join(lines) + "\n"


def target_listing() -> str:
    """The text ``squeeze targets`` prints, from the cache when it is current."""
    from .zoo import cache_dir

    path = cache_dir() / "targets" / f"{_key()}.txt"
    if path.is_file():
        return path.read_text()
    text = _build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    except OSError:  # a read-only cache only costs the next run its speed
        pass
    return text
