"""Which instants of a clip to sample, and which decoded frame shows each instant.

Everything here works in seconds relative to the stream start, so variable-frame-rate
sources are sampled by timestamp rather than by `index * nominal_fps`.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from cog_assets.core.choices import ShortClipPolicy, StartPolicy
from cog_assets.core.reasons import RejectReason

from .errors import MediaError

__all__ = ["PTS_EPSILON_S", "frames_available", "sample_timestamps", "pick_nearest",
           "select_streaming"]

T = TypeVar("T")

# Timestamps are rounded to the container's time base (Matroska: 1 ms), so a
# frame at 67 ms must still count as "at or before" a wanted 66.67 ms.
PTS_EPSILON_S = 1e-3



def _fits(num_frames: int, duration_s: float, fps: float, tolerance_s: float) -> bool:
    # Compare in frame units with a tiny slack so float noise never flips a verdict.
    return duration_s >= 0 and num_frames - 1 <= (duration_s + tolerance_s) * fps + 1e-9


def frames_available(duration_s: float | None, fps: float, tolerance_s: float = 0.0) -> int | None:
    """How many frames spaced `1/fps` fit in the clip (None when the duration is unknown).

    Agrees with `sample_timestamps`: a window of n frames is accepted iff n <= this.
    """
    if duration_s is None:
        return None
    if not duration_s >= 0:
        return 0
    return int(math.floor((duration_s + tolerance_s) * fps + 1e-9)) + 1


def sample_timestamps(
    duration_s: float,
    num_frames: int,
    fps: float,
    start: StartPolicy | str,
    seed: int,
    *,
    short_clips: ShortClipPolicy | str,
    tolerance_s: float = 0.0,
) -> list[float]:
    """`num_frames` times spaced `1/fps` apart inside a clip of `duration_s` seconds.

    The window starts at 0 ("start"), sits in the middle ("centre"; "center" also
    accepted) or at a position drawn from `random.Random(seed)` ("random").
    A clip is long enough when the span `(num_frames - 1) / fps` is at most
    `duration_s + tolerance_s`; callers pass half a *source* frame (see
    `decode.half_frame`) because container durations are often rounded a little
    short, and a last sample just past the end still maps to the final frame.
    Shorter clips follow `short_clips`: "reject" raises MediaError("too_short"),
    "stride" spreads the frames evenly over [0, duration_s], "pad" samples at fps
    from 0 and repeats the last in-clip time.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    mode = StartPolicy(start)  # ValueError names the bad word
    short_clips = ShortClipPolicy(short_clips)
    span = (num_frames - 1) / fps
    if not _fits(num_frames, duration_s, fps, tolerance_s):  # also rejects NaN
        if short_clips == ShortClipPolicy.reject or not duration_s >= 0:
            raise MediaError(
                RejectReason.too_short,
                f"clip is {duration_s:.3f} s long; {num_frames} frames at {fps:g} fps "
                f"need {span:.3f} s",
            )
        if short_clips == ShortClipPolicy.stride:
            return [duration_s * i / (num_frames - 1) for i in range(num_frames)]
        real = [i / fps for i in range(frames_available(duration_s, fps, tolerance_s) or 1)]
        return real + [real[-1]] * (num_frames - len(real))
    slack = max(0.0, duration_s - span)
    if mode == StartPolicy.start:
        offset = 0.0
    elif mode == StartPolicy.centre:
        offset = slack / 2
    else:
        offset = random.Random(seed).uniform(0.0, slack)
    return [offset + i / fps for i in range(num_frames)]


def pick_nearest(frame_times: Sequence[float], wanted: Sequence[float]) -> list[int]:
    """Index of the frame on screen at each wanted time: the last with pts <= t (+epsilon).

    Times before the first frame map to the first frame. `frame_times` need not be
    sorted; ties keep the later index in presentation order.
    """
    if not frame_times:
        raise ValueError("pick_nearest needs at least one frame time")
    order = sorted(range(len(frame_times)), key=lambda i: frame_times[i])
    times = [frame_times[i] for i in order]
    picked = []
    for t in wanted:
        pos = bisect.bisect_right(times, t + PTS_EPSILON_S) - 1
        picked.append(order[max(pos, 0)])
    return picked


def select_streaming(
    timed: Iterable[tuple[float, T]], wanted: Sequence[float]
) -> Iterator[tuple[list[int], T]]:
    """Same choice as `pick_nearest`, over a stream of `(time, item)` in presentation order.

    Yields `(indices into wanted, item)` as soon as an item is known to be the
    answer, and stops pulling from `timed` once every wanted time is settled, so a
    decoder can stop early and never hold more than one frame. `wanted` must be
    ascending.
    """
    n = len(wanted)
    k = 0
    prev: T | None = None
    have_prev = False
    for time, item in timed:
        if k >= n:
            return
        settled = []
        while k < n and time > wanted[k] + PTS_EPSILON_S:
            settled.append(k)
            k += 1
        if settled:
            if have_prev:
                yield settled, prev  # type: ignore[misc]
            else:
                yield settled, item  # wanted before the first frame -> first frame
        if k >= n:
            return
        prev, have_prev = item, True
    if k < n and have_prev:
        yield list(range(k, n)), prev  # type: ignore[misc]
