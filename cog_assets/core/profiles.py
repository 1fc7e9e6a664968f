"""Model profiles as data: the facts each CogVideoX model imposes on a dataset.

A profile says what frames, resolution and text length a model trains on and how its VAE
scales latents. Pipelines look these up by name, so adding a model is adding a row here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelProfile:
    """What one CogVideoX variant needs from its training data."""

    name: str
    height: int
    width: int
    num_frames: int
    fps: int
    frame_rule: int  # F must be frame_rule * k + 1 (8 for 1.0, 16 for 1.5, 4 for tiny)
    scaling_factor: float
    invert_scale_latents: bool
    text_max_length: int
    text_dim: int
    dtype: str  # the dtype the model was trained in
    hub_id: str | None  # default weights, diffusers layout
    i2v: bool = False
    max_frames: int = 49
    fixed_size: tuple[int, int] | None = None  # (H, W) an I2V model accepts, when only one
    short_side: int | None = None  # I2V 1.5: the short side must be exactly this
    max_side: int | None = None
    temporal_patch: int = 1  # 1.5 patches latent frames in pairs: F' is padded to even
    family: str = "cogvideox"  # "cogvideox1.5" for 1.5 and its tiny twins (trainer names)
    latent_channels: int = 16
    temporal_compression: int = 4
    spatial_compression: int = 8

    def latent_frames(self, num_frames: int | None = None) -> int:
        """F' = (F - 1) / 4 + 1: the VAE keeps the first frame and compresses the rest by 4."""
        f = self.num_frames if num_frames is None else num_frames
        return (f - 1) // self.temporal_compression + 1

    def latent_shape(self, num_frames: int | None = None, height: int | None = None,
                     width: int | None = None) -> tuple[int, int, int, int]:
        """Shape of the stored posterior moments (mean and logvar): [2C, F', H/8, W/8]."""
        h = self.height if height is None else height
        w = self.width if width is None else width
        s = self.spatial_compression
        return (2 * self.latent_channels, self.latent_frames(num_frames), h // s, w // s)

    def text_shape(self) -> tuple[int, int]:
        return (self.text_max_length, self.text_dim)

    def valid_frame_counts(self) -> list[int]:
        """Every F of the profile's form (rule·k + 1) up to its maximum."""
        return list(range(self.frame_rule + 1, self.max_frames + 1, self.frame_rule))

    def padded_latent_frames(self, num_frames: int | None = None) -> int:
        """F' as the 1.5 transformer takes it: padded up to a multiple of the temporal patch
        (by repeating the first latent frame, as CogVideo's trainers do)."""
        frames = self.latent_frames(num_frames)
        return frames + (-frames) % self.temporal_patch

    def video_tokens(self, num_frames: int, height: int, width: int) -> int:
        """Transformer tokens of one clip: F' · (H/16) · (W/16); with a temporal patch of 2
        (1.5) F' is first padded to even and halved."""
        frames = self.latent_frames(num_frames)
        if self.temporal_patch > 1:
            frames = -(-frames // self.temporal_patch)
        return frames * (height // 16) * (width // 16)


PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in [
        ModelProfile(
            name="tiny", height=64, width=96, num_frames=9, fps=8, frame_rule=4,
            scaling_factor=0.7, invert_scale_latents=False, text_max_length=226, text_dim=32,
            dtype="float32", hub_id=None, max_frames=49,
        ),
        ModelProfile(  # tiny, image-to-video: keeps the clean first frame's latents too
            name="tiny-i2v", height=64, width=96, num_frames=9, fps=8, frame_rule=4,
            scaling_factor=0.7, invert_scale_latents=False, text_max_length=226, text_dim=32,
            dtype="float32", hub_id=None, max_frames=49, i2v=True,
        ),
        # CogVideoX 1.5's twins: its frame rule (16k+1), fps, temporal patch, inverted latent
        # scaling and I2V size rule (a fixed short side, a longest side) at toy width
        ModelProfile(
            name="tiny-1.5", height=64, width=96, num_frames=17, fps=16, frame_rule=16,
            scaling_factor=0.7, invert_scale_latents=True, text_max_length=226, text_dim=32,
            dtype="float32", hub_id=None, max_frames=49, temporal_patch=2,
            family="cogvideox1.5",
        ),
        ModelProfile(
            name="tiny-1.5-i2v", height=64, width=96, num_frames=17, fps=16, frame_rule=16,
            scaling_factor=0.7, invert_scale_latents=True, text_max_length=226, text_dim=32,
            dtype="float32", hub_id=None, max_frames=49, temporal_patch=2, i2v=True,
            short_side=64, max_side=96, family="cogvideox1.5",
        ),
        ModelProfile(
            name="cogvideox-2b", height=480, width=720, num_frames=49, fps=8, frame_rule=8,
            scaling_factor=1.15258426, invert_scale_latents=False, text_max_length=226,
            text_dim=4096, dtype="float16", hub_id="THUDM/CogVideoX-2b",
        ),
        ModelProfile(
            name="cogvideox-5b", height=480, width=720, num_frames=49, fps=8, frame_rule=8,
            scaling_factor=0.7, invert_scale_latents=False, text_max_length=226,
            text_dim=4096, dtype="bfloat16", hub_id="THUDM/CogVideoX-5b",
        ),
        ModelProfile(
            name="cogvideox-5b-i2v", height=480, width=720, num_frames=49, fps=8, frame_rule=8,
            scaling_factor=0.7, invert_scale_latents=False, text_max_length=226,
            text_dim=4096, dtype="bfloat16", hub_id="THUDM/CogVideoX-5b-I2V", i2v=True,
            fixed_size=(480, 720),
        ),
        ModelProfile(
            name="cogvideox1.5-5b", height=768, width=1360, num_frames=81, fps=16, frame_rule=16,
            scaling_factor=0.7, invert_scale_latents=True, text_max_length=226,
            text_dim=4096, dtype="bfloat16", hub_id="THUDM/CogVideoX1.5-5B", max_frames=161,
            temporal_patch=2, family="cogvideox1.5",
        ),
        ModelProfile(
            name="cogvideox1.5-5b-i2v", height=768, width=1360, num_frames=81, fps=16,
            frame_rule=16, scaling_factor=0.7, invert_scale_latents=True, text_max_length=226,
            text_dim=4096, dtype="bfloat16", hub_id="THUDM/CogVideoX1.5-5B-I2V", i2v=True,
            max_frames=161, temporal_patch=2, short_side=768, max_side=1360,
            family="cogvideox1.5",
        ),
    ]
}


class ProfileError(ValueError):
    """A configuration breaks a model's rules; raised before any work starts."""


def get_profile(name: str) -> ModelProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(
            f"unknown model profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}"
        ) from None


def check_clip_shape(profile: ModelProfile, num_frames: int, height: int, width: int) -> None:
    """Refuse a (F, H, W) the model cannot train on, saying which rule and what would be valid."""
    rule = profile.frame_rule
    if num_frames < 1 or (num_frames - 1) % rule:
        lower = (max(num_frames - 1, 0) // rule) * rule + 1
        raise ProfileError(
            f"{profile.name}: frame count {num_frames} is not of the form {rule}k+1; "
            f"nearest valid counts are {lower} and {lower + rule}"
        )
    if num_frames > profile.max_frames:
        raise ProfileError(f"{profile.name}: frame count {num_frames} is over the model's "
                           f"maximum of {profile.max_frames}")
    for label, value in (("height", height), ("width", width)):
        if value <= 0 or value % 16:
            raise ProfileError(
                f"{profile.name}: {label} {value} is not a positive multiple of 16; "
                f"try {max(16, round(value / 16) * 16)}"
            )
    if profile.fixed_size is not None and (height, width) != profile.fixed_size:
        h, w = profile.fixed_size
        raise ProfileError(f"{profile.name} only takes {h}x{w} (HxW); got {height}x{width}")
    if profile.short_side is not None and min(height, width) != profile.short_side:
        raise ProfileError(f"{profile.name}: the short side must be {profile.short_side}; got "
                           f"{height}x{width} (HxW)")
    if profile.max_side is not None and max(height, width) > profile.max_side:
        raise ProfileError(f"{profile.name}: the long side must be at most {profile.max_side}; "
                           f"got {height}x{width} (HxW)")
