"""Progress of a step over its items (clips, captions), where the user watches it: stderr.

On a terminal one line rewrites itself as items finish (done/total, items per second, time
left); in a log that is not a terminal (CI) it prints plain lines instead: one every
`every_s` seconds while the step runs and one when it ends, so a log is neither silent for
minutes nor flooded. A step with nothing to do prints nothing (items found done already
count towards the total but are no work), nor does a Progress without a label (a caller
that shows no progress).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def duration_text(seconds: float) -> str:
    """4.2 s, 3 min 05 s, 1 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """`advance(n)` as items finish, `close()` at the end (also as a context manager)."""

    def __init__(self, label: str | None, total: int, unit: str = "clips",
                 stream: TextIO | None = None, every_s: float = 30.0,
                 tty: bool | None = None):
        self.label, self.unit = label, unit
        self.total = total if label is not None else 0  # no label: silent
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_tty(self.stream) if tty is None else tty
        self.every_s = every_s
        self.done = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._lock = threading.Lock()
        self._closed = False
        self.worked = False  # whether any item advanced was work (not found done)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def line(self) -> str:
        """`label: done/total unit, rate unit/s, ETA t` (or `in t` once all are done)."""
        elapsed = max(1e-9, time.monotonic() - self.started)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done}/{self.total} {self.unit}"
        if self.done >= self.total:
            return f"{text} in {duration_text(elapsed)} ({rate:.2f} {self.unit}/s)"
        if self.done:
            eta = (self.total - self.done) / rate
            return f"{text}, {rate:.2f} {self.unit}/s, ETA {duration_text(eta)}"
        return f"{text}, started {duration_text(elapsed)} ago"

    def advance(self, n: int = 1, work: bool = True) -> None:
        """`n` more items done; `work=False` for items that were done already (reused)."""
        if self.total <= 0:
            return
        with self._lock:
            self.done += n
            self.worked = self.worked or work
            now = time.monotonic()
            if not self.worked:
                return
            if self.tty:
                self._write("\r" + self.line() + "\x1b[K")
            elif now - self._last_line >= self.every_s and self.done < self.total:
                self._write(self.line() + "\n")
                self._last_line = now

    def close(self) -> None:
        """The last line (on a terminal, the updated one ends there)."""
        with self._lock:
            if self._closed or self.total <= 0 or not self.worked:
                self._closed = True
                return
            self._closed = True
            self._write(("\r" if self.tty else "") + self.line()
                        + ("\x1b[K" if self.tty else "") + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: progress is not the work
            pass


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
