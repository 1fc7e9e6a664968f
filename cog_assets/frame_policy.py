"""How clips become frames: buckets, sampling window, short-clip policy and resize mode.

Built once from the user's settings and checked against the model profile before any work
starts, so a wrong frame count or size is refused with the rule it breaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from cog_assets.buckets import Bucket, budget_buckets, explicit_buckets, nearest_bucket
from cog_assets.media.resize import RESIZE_MODES
from cog_assets.media.sampling import SHORT_CLIP_POLICIES, START_POLICIES, frames_available
from cog_assets.profiles import ModelProfile, ProfileError, check_clip_shape
from cog_assets.store import artifact_key

# Bump when the decoder's output bytes change for the same inputs.
FRAMES_VERSION = "frames-v1"
FRAMES_KIND = "frames"


@dataclass(frozen=True)
class FrameSpec:
    """Everything that decides one clip's frames besides its bytes."""

    num_frames: int
    height: int
    width: int
    fps: float
    start: str = "start"
    seed: int = 0
    resize: str = "cover"
    short_clips: str = "reject"
    i2v: bool = False  # I2V also keeps the clean first frame (or the supplied image)

    @property
    def bucket(self) -> str:
        return f"{self.num_frames}x{self.height}x{self.width}"

    def key(self, content_hash: str, first_frame: str | None = None) -> str:
        return artifact_key(FRAMES_KIND, content=content_hash, first_frame=first_frame,
                            version=FRAMES_VERSION, **asdict(self))


@dataclass(frozen=True)
class FramePolicy:
    profile: ModelProfile
    buckets: tuple[Bucket, ...]
    start: str = "start"
    seed: int = 0
    resize: str = "cover"
    short_clips: str = "reject"

    @classmethod
    def build(cls, profile: ModelProfile, buckets: Sequence[str] | None = None,
              token_budget: int | None = None, start: str = "start", seed: int = 0,
              resize: str = "cover", short_clips: str = "reject") -> "FramePolicy":
        """Check every choice against the profile; raise ProfileError naming what is wrong."""
        for name, value, allowed in (("sample_start", start, START_POLICIES),
                                     ("resize", resize, RESIZE_MODES),
                                     ("short_clips", short_clips, SHORT_CLIP_POLICIES)):
            if value not in allowed:
                raise ProfileError(f"{name} {value!r} is not one of {', '.join(allowed)}")
        if buckets and token_budget:
            raise ProfileError("give either a bucket list or a token budget, not both")
        if buckets:
            chosen = explicit_buckets(profile, buckets)
        elif token_budget:
            chosen = budget_buckets(profile, token_budget)
        else:
            check_clip_shape(profile, profile.num_frames, profile.height, profile.width)
            chosen = [Bucket(profile.num_frames, profile.height, profile.width)]
        return cls(profile, tuple(chosen), start, seed, resize, short_clips)

    def assign(self, width: int, height: int, duration_s: float | None,
               tolerance_s: float) -> Bucket | None:
        """The clip's bucket, or None when it is too short for every bucket (policy reject)."""
        available = (None if self.short_clips != "reject"
                     else frames_available(duration_s, self.profile.fps, tolerance_s))
        return nearest_bucket(self.buckets, width, height, available)

    def spec(self, bucket: Bucket | str) -> FrameSpec:
        b = Bucket.parse(bucket) if isinstance(bucket, str) else bucket
        return FrameSpec(b.num_frames, b.height, b.width, self.profile.fps, self.start,
                         self.seed, self.resize, self.short_clips, self.profile.i2v)

    def shortest_window_s(self) -> float:
        return (min(b.num_frames for b in self.buckets) - 1) / self.profile.fps
