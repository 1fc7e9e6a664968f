"""Buckets: the (F, H, W) shapes a dataset is cut to, and which one each clip goes to.

Either an explicit list, or a token budget as VideoX-Fun trains: for each aspect ratio the
largest frame size and frame count whose transformer tokens fit the budget, so one run mixes
resolutions and lengths at a roughly constant cost per sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cog_assets.core.profiles import ModelProfile, ProfileError, check_clip_shape

# Height/width ratios offered by a token budget: portrait through landscape.
DEFAULT_ASPECTS = (2.0, 16 / 9, 3 / 2, 4 / 3, 1.0, 3 / 4, 2 / 3, 9 / 16, 1 / 2)
ASPECT_TOLERANCE = 0.04  # log-aspect distance within which two buckets count as one shape


@dataclass(frozen=True, order=True)
class Bucket:
    num_frames: int
    height: int
    width: int

    @property
    def key(self) -> str:
        """`FxHxW`, the form buckets take in settings, tables and trainer arguments."""
        return f"{self.num_frames}x{self.height}x{self.width}"

    @property
    def aspect(self) -> float:
        return self.height / self.width

    @classmethod
    def parse(cls, text: str) -> "Bucket":
        try:
            f, h, w = (int(x) for x in text.lower().split("x"))
        except ValueError:
            raise ProfileError(f"bucket {text!r} is not of the form FxHxW, e.g. 49x480x720"
                               ) from None
        return cls(f, h, w)


def explicit_buckets(profile: ModelProfile, specs: Iterable[str | Bucket]) -> list[Bucket]:
    """Parse and check a user's bucket list against the profile's rules."""
    buckets = sorted({s if isinstance(s, Bucket) else Bucket.parse(s) for s in specs})
    if not buckets:
        raise ProfileError("the bucket list is empty")
    for b in buckets:
        check_clip_shape(profile, b.num_frames, b.height, b.width)
    return buckets


def choose_buckets(profile: ModelProfile, buckets: Sequence[str | Bucket] = (),
                   token_budget: int | None = None) -> list[Bucket]:
    """The dataset's buckets: the explicit list, or those of a token budget, or the profile's
    own shape; each checked against the profile's rules (ProfileError names the rule)."""
    if buckets and token_budget:
        raise ProfileError("give either a bucket list or a token budget, not both")
    if buckets:
        return explicit_buckets(profile, buckets)
    if token_budget:
        return budget_buckets(profile, token_budget)
    check_clip_shape(profile, profile.num_frames, profile.height, profile.width)
    return [Bucket(profile.num_frames, profile.height, profile.width)]


def budget_buckets(profile: ModelProfile, token_budget: int,
                   aspects: Sequence[float] = DEFAULT_ASPECTS,
                   frame_counts: Sequence[int] | None = None, multiple: int = 16
                   ) -> list[Bucket]:
    """For every aspect ratio and frame count, the largest H x W (multiples of `multiple`) the
    profile accepts whose video tokens fit `token_budget`.

    Sizes are built to satisfy the profile's rules (its fixed size, or its fixed short side and
    longest side), so no bucket is dropped for breaking one; an aspect that does not fit the
    budget at any size simply has no bucket.
    """
    counts = [f for f in (frame_counts or profile.valid_frame_counts()) if f <= profile.max_frames]
    buckets = set()
    for aspect in aspects:
        for frames in counts:
            size = _largest_size(profile, token_budget, aspect, frames, multiple)
            if size is not None:
                check_clip_shape(profile, frames, *size)  # by construction; a failure is a bug
                buckets.add(Bucket(frames, *size))
    if not buckets:
        raise ProfileError(f"no bucket of {profile.name} fits a budget of {token_budget} tokens")
    return sorted(buckets)


def _largest_size(profile: ModelProfile, budget: int, aspect: float, frames: int,
                  multiple: int) -> tuple[int, int] | None:
    """(H, W) near `aspect` within the profile's size rules whose tokens fit, or None."""
    if profile.fixed_size is not None:
        candidates = [profile.fixed_size]
    elif profile.short_side is not None:
        short, longest = profile.short_side, profile.max_side or 10**9
        long_side = min(longest, int(round(short / min(aspect, 1 / aspect) / multiple)) * multiple)
        candidates = [(short, long_side) if aspect <= 1 else (long_side, short)]
    else:
        per_frame = budget / profile.video_tokens(frames, 16, 16)  # 16x16-pixel cells a frame
        width = int(math.sqrt(per_frame / aspect) * 16 // multiple) * multiple
        candidates = [(int(round(w * aspect / multiple)) * multiple, w)
                      for w in range(width, multiple - 1, -multiple)]
    for height, width in candidates:
        if height >= multiple and profile.video_tokens(frames, height, width) <= budget:
            return height, width
    return None


def nearest_bucket(buckets: Sequence[Bucket], width: int, height: int,
                   max_frames: int | None) -> Bucket | None:
    """The bucket a clip of this display size, and able to give `max_frames` frames, goes to.

    Nearest aspect ratio first (in log space, so 2:1 and 1:2 are equally far from 1:1, and
    within ASPECT_TOLERANCE counted as equal: sizes rounded to multiples of 16 move a bucket's
    aspect a little); among those, the most frames the clip can fill; then the largest size
    not bigger than the source (no upscaling when avoidable). None when the clip fills no
    bucket's frames.
    """
    aspect = height / width
    usable = [b for b in buckets if max_frames is None or b.num_frames <= max_frames]
    if not usable:
        return None
    best_distance = min(abs(math.log(b.aspect / aspect)) for b in usable)
    candidates = [b for b in usable
                  if abs(math.log(b.aspect / aspect)) <= best_distance + ASPECT_TOLERANCE]
    most_frames = max(b.num_frames for b in candidates)
    candidates = [b for b in candidates if b.num_frames == most_frames]
    fits = [b for b in candidates if b.height <= height and b.width <= width]
    pool = fits or candidates
    return max(pool, key=lambda b: (b.height * b.width) if fits else -(b.height * b.width))
