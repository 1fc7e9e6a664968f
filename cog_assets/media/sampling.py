"""Which presentation times to take: F frames at the profile's fps, VFR-safe."""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence

from cog_assets.media.errors import MediaError

START_POLICIES = ("start", "centre", "random")
SHORT_CLIP_POLICIES = ("reject", "stride", "pad")
EPSILON = 1e-6


def window_span(num_frames: int, fps: float) -> float:
    """Seconds from the first sampled frame's time to the last one's."""
    return (num_frames - 1) / fps


def sample_timestamps(duration_s: float, num_frames: int, fps: float, start: str = "start",
                      seed: int = 0, tolerance_s: float = EPSILON, short_clips: str = "reject"
                      ) -> list[float]:
    """Times (s, from the stream start) spaced 1/fps apart, for a window at the clip's start,
    centre, or a seeded random place. The last time must fall inside the clip, give or take
    `tolerance_s` (callers pass half a source frame: container durations are rounded).

    A clip shorter than the window is rejected (`reject`), sampled at even steps over its
    whole length (`stride`, as cogvideox-factory does), or sampled at fps with the last frame
    repeated (`pad`, as CogVideo does)."""
    if start not in START_POLICIES:
        raise ValueError(f"start must be one of {START_POLICIES}, got {start!r}")
    if short_clips not in SHORT_CLIP_POLICIES:
        raise ValueError(f"short_clips must be one of {SHORT_CLIP_POLICIES}, got {short_clips!r}")
    span = window_span(num_frames, fps)
    slack = duration_s - span
    if slack < -tolerance_s:
        if short_clips == "stride" and duration_s > 0:
            return [i * duration_s / num_frames for i in range(num_frames)]
        if short_clips == "pad" and duration_s > 0:
            return [min(i / fps, max(duration_s - tolerance_s, 0.0)) for i in range(num_frames)]
        raise MediaError("too_short", f"{duration_s:.3f} s long; {num_frames} frames at "
                         f"{fps:g} fps need {span:.3f} s")
    slack = max(slack, 0.0)
    offset = {"start": 0.0, "centre": slack / 2,
              "random": random.Random(seed).uniform(0.0, slack)}[start]
    return [offset + i / fps for i in range(num_frames)]


def frames_available(duration_s: float | None, fps: float, tolerance_s: float = EPSILON
                     ) -> int | None:
    """How many frames at `fps` a clip of this duration gives; None when unknown."""
    if duration_s is None:
        return None
    return int((duration_s + tolerance_s) * fps + EPSILON) + 1


def pick_nearest(frame_times: Sequence[float], wanted: Sequence[float]) -> list[int]:
    """For each wanted time, the index of the frame on screen then: the last frame whose
    presentation time is <= t (the first frame for times before it)."""
    picks = []
    for t in wanted:
        i = bisect.bisect_right(frame_times, t + EPSILON) - 1
        picks.append(max(i, 0))
    return picks
