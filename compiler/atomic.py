"""Atomic file writes: write beside the destination, then rename."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import SqueezeError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success."""
    dest = Path(dest)
    if dest.is_dir():
        raise SqueezeError(f"output path {dest} is a directory: give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent or ".")
    except FileNotFoundError:
        raise SqueezeError(f"cannot write {dest}: directory {dest.parent} does not exist") from None
    except PermissionError:
        raise SqueezeError(f"cannot write {dest}: permission denied in {dest.parent}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
