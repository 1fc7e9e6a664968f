"""vae_latents: the VAE posterior moments of every clip's frames, batched per bucket.

For I2V profiles the artefact also holds `image_moments`, the moments of the clean first
frame encoded on its own ([32, 1, H/8, W/8]), which I2V trainers concatenate as conditioning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import torch
from diffusers import AutoencoderKLCogVideoX

from cog_assets.models.vae import encode_moments
from cog_assets.stages.common import Reuse
from cog_assets.stages.frames import FRAMES_KIND
from cog_assets.store import ContentStore, artifact_key

LATENTS_VERSION = "vae-moments-v1"
LATENTS_KIND = "vae_moments"

LATENTS_SCHEMA = {
    "clip_id": pl.String, "frames_key": pl.String, "latent_key": pl.String,
    "bucket": pl.String, "status": pl.String,
}


@dataclass(frozen=True)
class VaeIdentity:
    """What decides the moments' bytes besides the frames: weights, dtype, tiling."""

    model: str
    dtype: str
    tiling: bool

    def key(self, frames_key: str) -> str:
        return artifact_key(LATENTS_KIND, frames=frames_key, model=self.model, dtype=self.dtype,
                            tiling=self.tiling, version=LATENTS_VERSION)


def encode_latents(frames: pl.DataFrame, store: ContentStore, identity: VaeIdentity,
                   load_vae: Callable[[], AutoencoderKLCogVideoX], batch_size: int = 1
                   ) -> tuple[pl.DataFrame, Reuse]:
    """Encode the clips whose moments are missing; the VAE is loaded only if one is."""
    stats = Reuse()
    started = time.perf_counter()
    ok = frames.filter(pl.col("status") != "rejected")
    records = {}
    todo: dict[str, list[dict]] = {}
    for row in ok.iter_rows(named=True):
        key = identity.key(row["frames_key"])
        record = {"clip_id": row["clip_id"], "frames_key": row["frames_key"],
                  "latent_key": key, "bucket": row["bucket"], "status": "reused"}
        records[row["clip_id"]] = record
        if store.has(LATENTS_KIND, key):
            stats.reused += 1
        else:
            todo.setdefault(row["bucket"], []).append(record)
    if todo:
        vae = load_vae()
        for bucket_rows in todo.values():
            for i in range(0, len(bucket_rows), batch_size):
                batch = bucket_rows[i:i + batch_size]
                loaded = [store.get_tensors(FRAMES_KIND, r["frames_key"]) for r in batch]
                outputs = {"moments": encode_moments(vae, torch.stack([t["frames"]
                                                                      for t in loaded]))}
                if "first_frame" in loaded[0]:  # I2V: the clean first frame, as one frame
                    firsts = torch.stack([t["first_frame"][None] for t in loaded])
                    outputs["image_moments"] = encode_moments(vae, firsts)
                for i, record in enumerate(batch):
                    store.put_tensors(LATENTS_KIND, record["latent_key"],
                                      {name: value[i] for name, value in outputs.items()},
                                      {"clip_id": record["clip_id"]})
                    record["status"] = "computed"
                    stats.computed += 1
        del vae
    stats.seconds = time.perf_counter() - started
    return pl.DataFrame(list(records.values()), schema=LATENTS_SCHEMA), stats

