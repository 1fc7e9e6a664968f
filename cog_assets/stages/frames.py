"""frame_tensors: sample, resize and crop each accepted clip to uint8 [F, H, W, 3] in the store."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image

from cog_assets.frame_policy import FRAMES_KIND, FramePolicy, FrameSpec
from cog_assets.media.decode import read_clip_frames
from cog_assets.media.errors import MediaError
from cog_assets.media.image import read_image
from cog_assets.stages.common import Reuse
from cog_assets.store import ContentStore, file_sha256

FRAMES_SCHEMA = {
    "clip_id": pl.String, "source": pl.String, "content_hash": pl.String,
    "caption_sha256": pl.String, "frames_key": pl.String, "bucket": pl.String,
    "num_frames": pl.Int64, "height": pl.Int64, "width": pl.Int64, "status": pl.String,
    "reason": pl.String, "message": pl.String,
}


def first_frame_png_path(store: ContentStore, frames_key: str) -> str:
    """Where the I2V first frame of these frames is kept as a PNG, to be shown and exported."""
    return store.artifact_path("first_frame", frames_key, ".png")


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_hash(root: Path, row: dict) -> str | None:
    """The supplied first-frame image's content hash (I2V with images.txt), else None."""
    if not row.get("image_path"):
        return None
    path = root / row["image_path"]
    if not path.is_file():
        raise MediaError("missing_file", f"first-frame image {row['image_path']} does not exist")
    return file_sha256(str(path))


def decode_clip(root: Path, row: dict, spec: FrameSpec) -> dict[str, torch.Tensor]:
    """The clip's frames and, for I2V, its clean first frame (the supplied image if any)."""
    frames = read_clip_frames(root / row["clip_id"], num_frames=spec.num_frames, fps=spec.fps,
                              height=spec.height, width=spec.width, start=spec.start,
                              seed=spec.seed, resize=spec.resize, short_clips=spec.short_clips)
    tensors = {"frames": torch.from_numpy(frames)}
    if spec.i2v:
        first = (read_image(root / row["image_path"], spec.height, spec.width, spec.resize)
                 if row.get("image_path") else frames[0])
        tensors["first_frame"] = torch.from_numpy(np.ascontiguousarray(first))
    return tensors


def extract_frames(validated: pl.DataFrame, data_root: str | os.PathLike,
                   store: ContentStore, policy: FramePolicy) -> tuple[pl.DataFrame, Reuse]:
    """Decode what the store lacks; a clip that fails to decode becomes a rejected row."""
    root = Path(data_root)
    stats = Reuse()
    started = time.perf_counter()
    records = []
    for row in validated.filter(pl.col("accepted")).iter_rows(named=True):
        spec = policy.spec(row["bucket"])
        record = {k: row[k] for k in ("clip_id", "source", "content_hash", "caption_sha256")}
        record.update(bucket=spec.bucket, num_frames=spec.num_frames, height=spec.height,
                      width=spec.width, reason=None, message=None)
        try:
            key = spec.key(row["content_hash"], _image_hash(root, row) if policy.profile.i2v
                           else None)
            record["frames_key"] = key
            if store.has(FRAMES_KIND, key):
                record["status"] = "reused"
                stats.reused += 1
            else:
                tensors = decode_clip(root, row, spec)
                if "first_frame" in tensors:
                    store.write_bytes(first_frame_png_path(store, key),
                                      png_bytes(tensors["first_frame"].numpy()))
                store.put_tensors(FRAMES_KIND, key, tensors, {"clip_id": row["clip_id"]})
                record["status"] = "computed"
                stats.computed += 1
        except MediaError as exc:
            record.update(status="rejected", reason=exc.reason,
                          message=f"{row['clip_id']}: {exc.message}", frames_key=None)
            stats.rejected += 1
        records.append(record)
    stats.seconds = time.perf_counter() - started
    return pl.DataFrame(records, schema=FRAMES_SCHEMA), stats
