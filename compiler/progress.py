"""Progress of long loops: a bar on a terminal, plain timed lines in a log.

A bar that redraws itself leaves lines of spaces in a log file, and a log with nothing in it
for minutes looks hung; so on a terminal this is tqdm's bar (cleared when done), elsewhere a
line at most every ``interval`` seconds with the count, the rate and the time left.
Part of the core: passes report through it too.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
Log = Callable[[str], None]


def to_stderr(line: str) -> None:
    """Print one progress or log line to stderr, at once."""
    print(line, file=sys.stderr, flush=True)


class Progress:
    """Counts the steps of a loop and reports through ``log`` at most every ``interval`` s."""

    def __init__(self, total: int | None, desc: str, log: Log | None = to_stderr, interval: float = 10.0) -> None:
        self.total, self.desc, self.log, self.interval = total, desc, log, interval
        self.count, self.start = 0, time.monotonic()
        self.last = self.start

    def step(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self.log is not None and now - self.last >= self.interval:
            self.last = now
            self.log(f"{self.desc}: {self._status(now)}")

    def _status(self, now: float) -> str:
        elapsed = now - self.start
        rate = elapsed / max(self.count, 1)
        text = f"{self.count}" + (f"/{self.total}" if self.total else "") + f", {rate:.2g} s each"
        if self.total:
            text += f", about {_duration(rate * (self.total - self.count))} left"
        return text


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def track(items: Iterable[T], desc: str, total: int | None = None, enabled: bool = True,
          log: Log | None = to_stderr) -> Iterator[T]:
    """``items``, with a bar on a terminal or :class:`Progress` lines through ``log`` elsewhere."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, leave=False)
        return
    progress = Progress(total if total is not None else _len(items), desc, log)
    for item in items:
        yield item
        progress.step()


def _len(items) -> int | None:
    try:
        return len(items)
    except TypeError:
        return None
