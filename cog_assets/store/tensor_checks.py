"""Checks on stored tensors and finished shards, as plain functions returning problems.

Each returns a list of human-readable problems naming the clip (or caption) and why; an
empty list means the check passed. The Dagster layer wraps them as asset checks.
"""

from __future__ import annotations

import polars as pl
import torch

from cog_assets.core.buckets import Bucket
from cog_assets.core.choices import ArtifactKind, Status
from cog_assets.core.profiles import ModelProfile
from cog_assets.store.content_store import ContentStore, CorruptArtifact


def _tensor_problems(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> list[str]:
    problems = []
    if tuple(tensor.shape) != shape:
        problems.append(f"{name}: shape {tuple(tensor.shape)}, expected {shape}")
    if not tensor.is_floating_point():
        problems.append(f"{name}: dtype {tensor.dtype} is not floating point")
    elif not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        problems.append(f"{name}: {bad} NaN/Inf values")
    return problems


def latent_problems(latents: pl.DataFrame, store: ContentStore, profile: ModelProfile
                    ) -> list[str]:
    """Moments are [2*16, (F-1)/4+1, H/8, W/8], floating point, finite; for I2V the image
    moments [2*16, 1, H/8, W/8] too. A damaged artefact is a problem naming key and path."""
    problems = []
    for row in latents.iter_rows(named=True):
        b = Bucket.parse(row["bucket"])
        try:
            stored = store.get_tensors(ArtifactKind.latents, row["latent_key"])
        except CorruptArtifact as exc:
            problems.append(f"{row['clip_id']}: {exc}")
            continue
        shape = profile.latent_shape(b.num_frames, b.height, b.width)
        problems += _tensor_problems(row["clip_id"], stored["moments"], shape)
        if profile.i2v:
            if "image_moments" not in stored:
                problems.append(f"{row['clip_id']}: no image moments (the profile is I2V)")
            else:
                problems += _tensor_problems(f"{row['clip_id']} (image)", stored["image_moments"],
                                             (shape[0], 1, *shape[2:]))
    return problems


def embedding_problems(embeddings: pl.DataFrame, store: ContentStore, profile: ModelProfile
                       ) -> list[str]:
    """Embeddings are [L, D] for the profile's text length and width, finite."""
    problems = []
    for row in embeddings.iter_rows(named=True):
        name = f"caption {row['caption_sha256'][:12]}"
        try:
            embed = store.get_tensors(ArtifactKind.embeddings, row["embedding_key"]
                                      )["prompt_embedding"]
        except CorruptArtifact as exc:
            problems.append(f"{name}: {exc}")
            continue
        problems += _tensor_problems(name, embed, profile.text_shape())
    return problems


def completeness_problems(validated: pl.DataFrame, frames: pl.DataFrame,
                          index: pl.DataFrame) -> list[str]:
    """Every clip that passed validation and decoding has a latent and an embedding."""
    decoded = set(frames.filter(pl.col("status") != Status.rejected)["clip_id"])
    accepted = set(validated.filter(pl.col("accepted"))["clip_id"])
    problems = [f"{c}: accepted but not decoded and not rejected"
                for c in sorted(accepted - set(frames["clip_id"]))]
    indexed = {r["clip_id"]: r for r in index.iter_rows(named=True)}
    for clip in sorted(decoded):
        row = indexed.get(clip)
        if row is None:
            problems.append(f"{clip}: decoded but missing from the finished index")
        elif not row["latent_key"] or not row["embedding_key"]:
            problems.append(f"{clip}: has no latent or no embedding")
    return problems
