"""frame_tensors: sample, resize and crop each accepted clip to uint8 [F, H, W, 3] in the store."""

from __future__ import annotations

import os
import time
from pathlib import Path

import polars as pl
import torch

from cog_assets.media.decode import read_clip_frames
from cog_assets.media.errors import MediaError
from cog_assets.frame_policy import FRAMES_KIND, FramePolicy
from cog_assets.stages.common import Reuse
from cog_assets.store import ContentStore

FRAMES_SCHEMA = {
    "clip_id": pl.String, "source": pl.String, "content_hash": pl.String,
    "caption_sha256": pl.String, "frames_key": pl.String, "bucket": pl.String,
    "num_frames": pl.Int64, "height": pl.Int64, "width": pl.Int64, "status": pl.String,
    "reason": pl.String, "message": pl.String,
}


def extract_frames(validated: pl.DataFrame, data_root: str | os.PathLike,
                   store: ContentStore, policy: FramePolicy) -> tuple[pl.DataFrame, Reuse]:
    """Decode what the store lacks; a clip that fails to decode becomes a rejected row."""
    root = Path(data_root)
    stats = Reuse()
    started = time.perf_counter()
    records = []
    for row in validated.filter(pl.col("accepted")).iter_rows(named=True):
        spec = policy.spec(row["bucket"])
        key = spec.key(row["content_hash"])
        record = {k: row[k] for k in ("clip_id", "source", "content_hash", "caption_sha256")}
        record.update(frames_key=key, bucket=spec.bucket, num_frames=spec.num_frames,
                      height=spec.height, width=spec.width, reason=None, message=None)
        if store.has(FRAMES_KIND, key):
            record["status"] = "reused"
            stats.reused += 1
        else:
            try:
                frames = read_clip_frames(root / row["clip_id"], num_frames=spec.num_frames,
                                          fps=spec.fps, height=spec.height, width=spec.width,
                                          start=spec.start, seed=spec.seed,
                                          resize=spec.resize, short_clips=spec.short_clips)
            except MediaError as exc:
                record.update(status="rejected", reason=exc.reason,
                              message=f"{row['clip_id']}: {exc.message}", frames_key=None)
                stats.rejected += 1
            else:
                store.put_tensors(FRAMES_KIND, key, {"frames": torch.from_numpy(frames)},
                                  {"clip_id": row["clip_id"]})
                record["status"] = "computed"
                stats.computed += 1
        records.append(record)
    stats.seconds = time.perf_counter() - started
    return pl.DataFrame(records, schema=FRAMES_SCHEMA), stats
