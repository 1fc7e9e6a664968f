"""From a scan's cut list to segments, and from its quality samples to each segment's scores.

Pure functions of the stored scan, so changing `min_clip_s`, `max_clip_s` or a threshold
re-derives every segment without decoding. A segment's clip id names its source and its
times as a W3C media fragment (`videos/a.mp4#t=12.480,17.920`, what a browser plays), so it
is stable for as long as the source's bytes and the detector's settings are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cog_assets.media.scan import SAMPLE_COLUMNS

TIME_DIGITS = 3  # segment bounds are kept to the millisecond, as their ids show them
_COLUMN = {name: i for i, name in enumerate(SAMPLE_COLUMNS)}


@dataclass(frozen=True)
class Segment:
    """[start_s, end_s) of a source video, seconds from its stream start."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def split_scenes(cuts: np.ndarray | list[float], end_s: float, max_clip_s: float
                 ) -> list[Segment]:
    """The scenes between the cuts, each cut into consecutive windows of `max_clip_s` (the
    last window holds what is left), in time order."""
    bounds = [0.0, *(float(c) for c in cuts if 0.0 < c < end_s), end_s]
    segments = []
    for start, end in zip(bounds, bounds[1:]):
        pieces = max(1, math.ceil((end - start) / max_clip_s - 1e-9))
        for k in range(pieces):
            a, b = start + k * max_clip_s, min(end, start + (k + 1) * max_clip_s)
            a, b = round(a, TIME_DIGITS), round(b, TIME_DIGITS)
            if b > a:
                segments.append(Segment(a, b))
    return segments


def segment_id(source_video: str, segment: Segment) -> str:
    return (f"{source_video}#t={segment.start_s:.{TIME_DIGITS}f},"
            f"{segment.end_s:.{TIME_DIGITS}f}")


def segment_scores(samples: np.ndarray, segment: Segment) -> dict[str, float | None]:
    """Mean of each measure over the samples inside the segment (None: none measured there).

    Motion counts only samples whose previous frame is inside the segment too, so the jump
    across a cut never reads as motion."""
    time, prev = samples[:, _COLUMN["time_s"]], samples[:, _COLUMN["prev_time_s"]]
    inside = (time >= segment.start_s) & (time < segment.end_s)
    moving = inside & (prev >= segment.start_s)

    def mean(column: str, rows: np.ndarray) -> float | None:
        values = samples[rows, _COLUMN[column]]
        values = values[~np.isnan(values)]
        return float(values.mean()) if len(values) else None

    return {"motion_score": mean("motion", moving), "brightness": mean("brightness", inside),
            "sharpness": mean("sharpness", inside), "aesthetic_score": mean("aesthetic", inside)}
