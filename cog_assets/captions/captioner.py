"""The one small interface every captioner and polisher has, whatever writes the text.

A job is one clip's frames (or, to polish, one caption); a captioner takes an iterable of jobs
(pulled lazily, so decoding and captioning overlap) and yields one result per job, in any
order, as each is done. A job that fails is a result with an error, never an exception: one
clip's failure is that clip's reject (`caption_failed`), and the clip is asked again on the
next run, alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class CaptionJob:
    """One clip to caption (`frames`: uint8 [n, h, w, 3] in time order) or one caption to
    rewrite (`text`); `tag` is the caller's, handed back with the result."""

    tag: object
    frames: np.ndarray | None = None
    text: str | None = None


@dataclass(frozen=True)
class CaptionResult:
    tag: object
    text: str | None  # None: failed
    error: str | None = None  # why it failed (after its retries)
    requests: int = 0  # requests sent for it (an endpoint's; retries included)

    @property
    def ok(self) -> bool:
        return self.text is not None


class Captioner(Protocol):
    """Writes captions: a local image-text-to-text model or a chat-completions endpoint."""

    identity: str  # the model it runs (part of every key; the index's caption_model)

    def run(self, jobs: Iterable[CaptionJob]) -> Iterator[CaptionResult]:
        """One result per job, as each is done."""
        ...
