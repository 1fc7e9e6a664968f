"""Reading a finished dataset back for training, with neither the VAE nor T5 loaded.

Conventions are those of the CogVideoX trainers: a latent is a sample of the stored moments
times the VAE scaling factor; I2V image latents are scaled the same way, or divided by it
where the model has `invert_scale_latents` (1.5, as diffusers' I2V pipeline does); with a
temporal patch of 2 (1.5) odd latent frame counts get copies of the first latent frame
prepended, as CogVideo's finetune trainers do before the transformer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import torch
from safetensors import safe_open
from torch.utils.data import Dataset, Sampler

from cog_assets.layout import CLIP_COLUMNS, INDEX_FILE, SHARD_GLOB, shard_file
from cog_assets.profiles import ModelProfile, get_profile


def sample_from_moments(moments: torch.Tensor, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
    """A draw from the diagonal Gaussian [2C, ...] -> [C, ...], as diffusers' latent_dist.sample()."""
    mean, logvar = moments.float().chunk(2, dim=0)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    return mean + std * noise


def pad_latent_frames(latent: torch.Tensor, temporal_patch: int) -> torch.Tensor:
    """[C, F', h, w] -> F' a multiple of the patch, by repeating the first latent frame."""
    missing = (-latent.shape[1]) % temporal_patch
    if not missing:
        return latent
    return torch.cat([latent[:, :1].repeat(1, missing, 1, 1), latent], dim=1)


def clip_fields(row: dict) -> dict:
    """Where the clip comes from and its scores (layout.CLIP_COLUMNS), from its index row, in
    values a default collate accepts: an unmeasured score (or a column an older shard lacks)
    is NaN, a missing text is ""."""
    fields = {}
    for column in CLIP_COLUMNS:
        value = row.get(column)
        if column in ("source_video", "caption_source"):
            fields[column] = value if value is not None else ""
        else:
            fields[column] = float("nan") if value is None else float(value)
    return fields


class CogVideoXLatentDataset(Dataset):
    """Clips of one or more finished shards: scaled latents, prompt embeddings and captions.

    `root` is the dataset directory holding `shard-*/` folders (or one shard folder). Each
    item draws its latent sample with a generator seeded by (`seed`, item), so epochs can
    vary the seed; `sample=False` takes the mean instead.
    """

    def __init__(self, root: str | Path, profile: ModelProfile | str, seed: int = 0,
                 sample: bool = True):
        self.root = Path(root)
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.seed = seed
        self.sample = sample
        shard_dirs = ([self.root] if (self.root / INDEX_FILE).is_file()
                      else sorted(p for p in self.root.glob(SHARD_GLOB)
                                  if (p / INDEX_FILE).is_file()))
        if not shard_dirs:
            raise FileNotFoundError(f"no {INDEX_FILE} under {self.root}")
        frames = [pl.read_parquet(d / INDEX_FILE).with_columns(pl.lit(str(d)).alias("shard_dir"))
                  for d in shard_dirs]
        self.index = pl.concat(frames, how="diagonal_relaxed").sort("shard_dir", "clip_id")
        self._rows = self.index.to_dicts()

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def buckets(self) -> list[str]:
        """Each item's bucket (`FxHxW`), for BucketBatchSampler."""
        return [row["bucket"] for row in self._rows]

    def _tensor(self, i: int, file_column: str, name_column: str) -> torch.Tensor:
        row = self._rows[i]
        path = Path(row["shard_dir"]) / shard_file(row, file_column)
        with safe_open(path, framework="pt") as handle:
            return handle.get_tensor(row[name_column])

    def moments(self, i: int) -> torch.Tensor:
        return self._tensor(i, "latents_file", "clip_id")

    def prompt_embedding(self, i: int) -> torch.Tensor:
        return self._tensor(i, "embeds_file", "caption_sha256")

    def _draw(self, moments: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.sample:
            return sample_from_moments(moments, generator)
        return moments.float().chunk(2, dim=0)[0]

    def __getitem__(self, i: int) -> dict:
        row = self._rows[i]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        scale = self.profile.scaling_factor
        latent = self._draw(self.moments(i), generator) * scale
        item = {
            "clip_id": row["clip_id"], "caption": row["caption"], "bucket": row["bucket"],
            "latents": pad_latent_frames(latent, self.profile.temporal_patch),
            "prompt_embeds": self.prompt_embedding(i),
            **clip_fields(row),
        }
        if row.get("has_image_latent"):
            image = self._draw(self._tensor(i, "image_latents_file", "clip_id"), generator)
            item["image_latents"] = (image / scale if self.profile.invert_scale_latents
                                     else image * scale)
        return item


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices that share a bucket, so every batch stacks into one tensor.

    Shuffles within and across buckets with `seed` (call `set_epoch` to vary it per epoch).
    """

    def __init__(self, buckets: list[str], batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0):
        self.buckets = buckets
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 10_007 + self.epoch)
        groups: dict[str, list[int]] = {}
        for index, bucket in enumerate(self.buckets):
            groups.setdefault(bucket, []).append(index)
        batches = []
        for bucket in sorted(groups):
            indices = groups[bucket]
            if self.shuffle:
                rng.shuffle(indices)
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start:start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
