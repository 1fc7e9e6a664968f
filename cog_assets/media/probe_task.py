"""The probe as the validation stage's isolated workers run it: plain picklable data in, the
probe out, the size and duration limits checked before FFmpeg decodes anything."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cog_assets.core.config import MediaLimits

from .limits import check_probe
from .probe import VideoProbe, probe_video
from .safe_open import FileStamp

__all__ = ["ProbeTask", "probe_task"]


@dataclass(frozen=True)
class ProbeTask:
    """One file's probe, for a worker process."""

    path: str
    root: str | None = None
    stamp: str | None = None  # FileStamp.text() when it was hashed
    limits: MediaLimits | None = None  # checked on the headers, before anything is decoded


def probe_task(task: ProbeTask) -> VideoProbe:
    check = None if task.limits is None else partial(check_probe, task.limits,
                                                     Path(task.path).name)
    return probe_video(task.path, root=task.root, expect=FileStamp.parse(task.stamp),
                       before_decoding=check)
