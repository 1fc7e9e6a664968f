"""Refusals both exports share: a clip whose tensors or caption a trainer would misread.

Every message names the clip and its shard, because the fix is upstream in the pipeline.
"""

from __future__ import annotations

from cog_assets.core.profiles import ModelProfile
from cog_assets.exports.naming import one_line
from cog_assets.exports.source import ClipRecord, ShardTensors


def check_clip_tensors(clip: ClipRecord, tensors: ShardTensors, profile: ModelProfile) -> None:
    """Moments, prompt embedding (and the image latent for I2V) exist with the profile's shapes."""
    expected = profile.latent_shape(clip.num_frames, clip.height, clip.width)
    shape = tensors.moments_shape(clip)
    if shape is None:
        raise ValueError(f"{clip.where()}: no latents stored for this clip")
    if shape != expected:
        raise ValueError(f"{clip.where()}: latents have shape {list(shape)}, but bucket "
                         f"{clip.bucket} under profile {profile.name} needs {list(expected)}")
    embedding = tensors.embedding_shape(clip)
    if embedding is None:
        raise ValueError(f"{clip.where()}: no prompt embedding stored under its caption_sha256")
    if embedding != profile.text_shape():
        raise ValueError(f"{clip.where()}: prompt embedding has shape {list(embedding)}, "
                         f"profile {profile.name} needs {list(profile.text_shape())}")
    if profile.i2v:
        image = tensors.image_latent_shape(clip)
        expected_image = (expected[0], 1, expected[2], expected[3])
        if image is None:
            raise ValueError(f"{clip.where()}: profile {profile.name} is image-to-video but "
                             "the shard holds no image latent for this clip")
        if image != expected_image:
            raise ValueError(f"{clip.where()}: image latent has shape {list(image)}, "
                             f"expected {list(expected_image)}")


def prompt_line(clip: ClipRecord) -> str:
    """The caption as one manifest line; an empty one would be skipped by the trainer's reader."""
    line = one_line(clip.caption)
    if not line:
        raise ValueError(f"{clip.where()}: caption is empty once flattened to one line; "
                         "prompts.txt readers skip empty lines, which would shift every "
                         "later prompt onto the wrong video")
    return line
