"""Atomic file writes: write beside the destination, then rename."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import SqueezeError


def _temp_beside(dest: Path) -> str:
    if dest.is_dir():
        raise SqueezeError(f"output path {dest} is a directory: give a file name")
    if not dest.parent.is_dir():
        raise SqueezeError(f"cannot write {dest}: directory {dest.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as err:
        raise SqueezeError(f"cannot write {dest}: {err.strerror}: choose a writable directory") from None
    os.close(fd)
    return tmp


def check_writable(dest: str | os.PathLike) -> None:
    """Fail early, before long work, if ``dest`` cannot be written."""
    os.unlink(_temp_beside(Path(dest)))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success, with
    the mode a plain ``open`` would have given (``mkstemp`` makes files 0600)."""
    dest = Path(dest)
    tmp = _temp_beside(dest)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _is_bundle(path: Path, marker: str) -> bool:
    return path.is_dir() and (not any(path.iterdir()) or (path / marker).is_file())


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest``; on success it replaces ``dest``, which may be
    missing, empty or an earlier folder of this kind (holding the file ``marker``), never anything else."""
    dest = Path(dest)
    if dest.exists() and not _is_bundle(dest, marker):
        raise SqueezeError(f"{dest} exists and is not an earlier output of this command: give a new folder")
    if not dest.parent.is_dir():
        raise SqueezeError(f"cannot write {dest}: directory {dest.parent} does not exist")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    except OSError as err:
        raise SqueezeError(f"cannot write {dest}: {err.strerror}: choose a writable directory") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, old)  # an empty folder is replaced by a rename
            os.replace(tmp, dest)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
