"""The frames a captioner is shown, decoded in worker processes as training frames are.

`caption_frames` frames spread evenly over the clip's own window (a scene of a longer video
is shown only that scene), upright, square-pixelled, whole (never cropped) and scaled so the
longest side is `caption_frame_size`; opened and decoded through `media.safe_open` and
`media.decode` in isolated workers with the decode timeout, like every read of an upload.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cog_assets.media.decode import read_window_frames
from cog_assets.media.safe_open import FileStamp


@dataclass(frozen=True)
class CaptionFramesTask:
    """One clip's frames for a captioner (or, with count 1, its thumbnail), as picklable data."""

    path: str
    count: int
    longest_side: int
    segment: tuple[float, float] | None  # (start_s, end_s) of a scene; None: the whole file
    root: str
    stamp: str | None = None  # FileStamp.text() of the video when it was hashed


def decode_caption_frames(task: CaptionFramesTask) -> np.ndarray:
    """uint8 [count, h, w, 3] (the worker-side function: module-level, picklable)."""
    return read_window_frames(task.path, task.count, task.longest_side, segment=task.segment,
                              threads=1, root=task.root, expect=FileStamp.parse(task.stamp))
