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


def split_scenes(cuts: np.ndarray | list[float], end_s: float, max_clip_s: float,
                 min_clip_s: float = 0.0) -> list[Segment]:
    """The scenes between the cuts, in time order, each longer one cut into equal windows no
    longer than `max_clip_s` (a 10.32 s scene with `max_clip_s` 10 gives two of 5.16 s, none
    of it dropped). Where equal windows would be shorter than `min_clip_s` (a `min_clip_s`
    over half `max_clip_s`), the scene is cut into consecutive windows of `max_clip_s` and a
    last one with what is left, which is then too short to keep."""
    bounds = [0.0, *(float(c) for c in cuts if 0.0 < c < end_s), end_s]
    segments = []
    for start, end in zip(bounds, bounds[1:]):
        length = end - start
        pieces = max(1, math.ceil(length / max_clip_s - 1e-9))
        if pieces == 1 or length / pieces >= min_clip_s:
            edges = [start + length * k / pieces for k in range(pieces)] + [end]
        else:
            edges = [start + max_clip_s * k for k in range(pieces)] + [end]
        for a, b in zip(edges, edges[1:]):
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
