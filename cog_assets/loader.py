"""Reading a finished dataset back for training, with neither the VAE nor T5 loaded."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from cog_assets.profiles import ModelProfile, get_profile
from cog_assets.stages.dataset import EMBEDS_FILE, INDEX_FILE, LATENTS_FILE


def sample_from_moments(moments: torch.Tensor, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
    """A draw from the diagonal Gaussian [2C, ...] -> [C, ...], as diffusers' latent_dist.sample()."""
    mean, logvar = moments.float().chunk(2, dim=0)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    return mean + std * noise


class CogVideoXLatentDataset(Dataset):
    """Clips of one or more finished shards: scaled latents, prompt embeddings and captions.

    `root` is the dataset directory holding `shard-*/` folders (or one shard folder).
    Latents are sampled from the stored moments (seeded per item and epoch via `seed`) and
    multiplied by the profile's scaling factor, the convention CogVideoX trainers use.
    """

    def __init__(self, root: str | Path, profile: ModelProfile | str, seed: int = 0,
                 sample: bool = True):
        self.root = Path(root)
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.seed = seed
        self.sample = sample
        shard_dirs = ([self.root] if (self.root / INDEX_FILE).is_file()
                      else sorted(p for p in self.root.glob("shard-*") if (p / INDEX_FILE).is_file()))
        if not shard_dirs:
            raise FileNotFoundError(f"no {INDEX_FILE} under {self.root}")
        frames = [pl.read_parquet(d / INDEX_FILE).with_columns(pl.lit(str(d)).alias("shard_dir"))
                  for d in shard_dirs]
        self.index = pl.concat(frames).sort("shard_dir", "clip_id")
        self._rows = self.index.to_dicts()

    def __len__(self) -> int:
        return len(self._rows)

    def moments(self, i: int) -> torch.Tensor:
        row = self._rows[i]
        with safe_open(Path(row["shard_dir"]) / LATENTS_FILE, framework="pt") as handle:
            return handle.get_tensor(row["clip_id"])

    def prompt_embedding(self, i: int) -> torch.Tensor:
        row = self._rows[i]
        with safe_open(Path(row["shard_dir"]) / EMBEDS_FILE, framework="pt") as handle:
            return handle.get_tensor(row["caption_sha256"])

    def __getitem__(self, i: int) -> dict:
        row = self._rows[i]
        moments = self.moments(i)
        if self.sample:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            latent = sample_from_moments(moments, generator)
        else:
            latent = moments.float().chunk(2, dim=0)[0]
        return {
            "clip_id": row["clip_id"], "caption": row["caption"], "bucket": row["bucket"],
            "latents": latent * self.profile.scaling_factor,
            "prompt_embeds": self.prompt_embedding(i),
        }
