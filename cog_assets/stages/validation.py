"""validated_clips: probe every manifest row and give it a verdict before any decoding."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from cog_assets.media.decode import half_frame
from cog_assets.media.errors import MediaError
from cog_assets.media.probe import probe_video
from cog_assets.media.sampling import sample_timestamps
from cog_assets.profiles import ModelProfile

VALIDATED_SCHEMA = {
    "clip_id": pl.String, "source": pl.String, "caption": pl.String,
    "caption_sha256": pl.String, "content_hash": pl.String, "image_path": pl.String,
    "codec": pl.String, "pix_fmt": pl.String, "width": pl.Int64, "height": pl.Int64,
    "sar": pl.Float64, "rotation": pl.Int64, "fps": pl.Float64, "duration_s": pl.Float64,
    "frame_count": pl.Int64, "has_audio": pl.Boolean, "accepted": pl.Boolean,
    "reason": pl.String, "message": pl.String, "stage": pl.String,
}
PROBE_FIELDS = ("codec", "pix_fmt", "width", "height", "sar", "rotation", "fps", "duration_s",
                "frame_count", "has_audio")


def verdict(path: Path, num_frames: int, fps: float) -> tuple[dict, str | None, str | None]:
    """(probe fields, reason, message) for one video; reason None means accepted so far."""
    try:
        probe = probe_video(path)
    except MediaError as exc:
        return {}, exc.reason, exc.message
    fields = {name: getattr(probe, name) for name in PROBE_FIELDS}
    if probe.duration_s is not None:  # unknown durations are settled by decoding
        try:
            sample_timestamps(probe.duration_s, num_frames, fps, tolerance_s=half_frame(probe))
        except MediaError as exc:
            return fields, exc.reason, exc.message
    return fields, None, None


def validate_clips(manifest: pl.DataFrame, data_root: str | os.PathLike,
                   profile: ModelProfile) -> pl.DataFrame:
    """One row per manifest row: its probe and `accepted`, or the reason it is rejected."""
    root = Path(data_root)
    records = []
    for row in manifest.iter_rows(named=True):
        record = {k: row[k] for k in ("clip_id", "source", "caption", "caption_sha256",
                                      "content_hash", "image_path")}
        reason, message = row["issue_reason"], row["issue_message"]
        if reason is None:
            fields, reason, message = verdict(root / row["clip_id"], profile.num_frames,
                                              profile.fps)
            record.update(fields)
            if reason is not None:
                message = f"{row['clip_id']}: {message}"
        record.update(accepted=reason is None, reason=reason, message=message,
                      stage=None if reason is None else "validate")
        records.append(record)
    return pl.DataFrame(records, schema=VALIDATED_SCHEMA)


def rejects_of(validated: pl.DataFrame) -> pl.DataFrame:
    return validated.filter(~pl.col("accepted")).select(
        "clip_id", "source", "reason", "message", "stage")
