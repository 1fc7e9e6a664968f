"""How clips become frames: the dataset's buckets and frame settings, checked against the
model profile before any work starts, so a wrong frame count or size is refused with the
rule it breaks."""

from __future__ import annotations

from dataclasses import dataclass

from cog_assets.core.buckets import Bucket, choose_buckets, nearest_bucket
from cog_assets.core.choices import ShortClipPolicy
from cog_assets.core.config import FrameSettings
from cog_assets.core.profiles import ModelProfile
from cog_assets.media.decode import FrameSpec
from cog_assets.media.sampling import frames_available


@dataclass(frozen=True)
class FramePolicy:
    profile: ModelProfile
    frames: FrameSettings
    buckets: tuple[Bucket, ...]

    @classmethod
    def build(cls, profile: ModelProfile, frames: FrameSettings | None = None) -> "FramePolicy":
        """Raises ProfileError, naming the rule, when the buckets break the profile's."""
        frames = frames or FrameSettings()
        return cls(profile, frames,
                   tuple(choose_buckets(profile, frames.buckets, frames.token_budget)))

    def assign(self, width: int, height: int, duration_s: float | None,
               tolerance_s: float) -> Bucket | None:
        """The clip's bucket, or None when it is too short for every bucket (policy reject)."""
        available = (None if self.frames.short_clips != ShortClipPolicy.reject
                     else frames_available(duration_s, self.profile.fps, tolerance_s))
        return nearest_bucket(self.buckets, width, height, available)

    def spec(self, bucket: Bucket | str) -> FrameSpec:
        b = Bucket.parse(bucket) if isinstance(bucket, str) else bucket
        f = self.frames
        return FrameSpec(b.num_frames, b.height, b.width, self.profile.fps, f.sample_start,
                         f.seed, f.resize, f.short_clips, self.profile.i2v)

    def shortest_window_s(self) -> float:
        return (min(b.num_frames for b in self.buckets) - 1) / self.profile.fps
