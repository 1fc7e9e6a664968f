"""validated_clips: probe every clip, give it a verdict and a bucket, before decoding.

A clip is a manifest row or, with scene splitting, a segment of one (`source_video` between
`start_s` and `end_s`): a segment is probed as its source (once per source) and bucketed by its
own length. Captions are counted with the profile's real tokenizer: one over the limit is kept
(T5 sees its first tokens, as in training) but flagged, so a user can see what the model never
reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import polars as pl

from cog_assets.config import MediaLimits
from cog_assets.frame_policy import FramePolicy
from cog_assets.layout import CLIP_COLUMNS
from cog_assets.media.decode import half_frame, segment_sampling_span
from cog_assets.media.errors import MediaError
from cog_assets.media.limits import check_file_size, check_probe
from cog_assets.media.probe import VideoProbe, probe_video
from cog_assets.reasons import RejectReason
from cog_assets.stages.common import REJECT_COLUMNS

VALIDATED_SCHEMA = {
    "clip_id": pl.String, "source": pl.String, "caption": pl.String,
    "caption_sha256": pl.String, "content_hash": pl.String, "image_path": pl.String,
    "codec": pl.String, "pix_fmt": pl.String, "width": pl.Int64, "height": pl.Int64,
    "sar": pl.Float64, "rotation": pl.Int64, "fps": pl.Float64, "duration_s": pl.Float64,
    "frame_count": pl.Int64, "has_audio": pl.Boolean, "bucket": pl.String,
    "caption_tokens": pl.Int64, "caption_truncated": pl.Boolean, "accepted": pl.Boolean,
    "reason": pl.String, "message": pl.String, "stage": pl.String,
    "source_video": pl.String, "start_s": pl.Float64, "end_s": pl.Float64,
    "caption_source": pl.String, "motion_score": pl.Float64, "brightness": pl.Float64,
    "sharpness": pl.Float64, "aesthetic_score": pl.Float64,
}
PROBE_FIELDS = ("codec", "pix_fmt", "width", "height", "sar", "rotation", "fps", "duration_s",
                "frame_count", "has_audio")


def verdict(path: Path, policy: FramePolicy, limits: MediaLimits,
            size_bytes: int | None = None, segment: tuple[float, float] | None = None,
            probe: VideoProbe | MediaError | None = None) -> tuple[dict, str | None, str | None]:
    """(probe fields with the bucket, reason, message) for one video, or for the `segment`
    (start_s, end_s) of it; reason None: accepted. `probe`: the video's probe (or the error
    probing it gave) when already known."""
    try:
        check_file_size(limits, path.name, size_bytes)
        if isinstance(probe, MediaError):
            raise probe
        probe = probe or probe_video(path)
    except MediaError as exc:
        return {}, exc.reason, exc.message
    fields = {name: getattr(probe, name) for name in PROBE_FIELDS}
    try:
        check_probe(limits, path.name, probe)
    except MediaError as exc:
        return fields, exc.reason, exc.message
    if segment is None:
        length, tolerance = probe.duration_s, half_frame(probe)
    else:
        length, tolerance = segment_sampling_span(*segment), 0.0
    bucket = policy.assign(probe.width, probe.height, length, tolerance)
    if bucket is None:
        return fields, RejectReason.too_short, (
            f"{length:.3f} s long; the shortest bucket needs "
            f"{policy.shortest_window_s():.3f} s at {policy.profile.fps} fps")
    fields["bucket"] = bucket.key
    return fields, None, None


class _Probes:
    """Each source probed once, however many of its segments are validated."""

    def __init__(self):
        self._seen: dict[Path, VideoProbe | MediaError] = {}

    def __call__(self, path: Path) -> VideoProbe | MediaError:
        if path not in self._seen:
            try:
                self._seen[path] = probe_video(path)
            except MediaError as exc:
                self._seen[path] = exc
        return self._seen[path]


def validate_clips(manifest: pl.DataFrame, data_root: str | os.PathLike, policy: FramePolicy,
                   limits: MediaLimits,
                   count_tokens: Callable[[list[str]], list[int]] | None = None
                   ) -> pl.DataFrame:
    """One row per manifest row: its probe, bucket and `accepted`, or why it is rejected."""
    root = Path(data_root)
    limit = policy.profile.text_max_length
    captions = manifest["caption"].to_list()
    tokens = count_tokens(captions) if count_tokens and captions else [None] * len(captions)
    records = []
    probes = _Probes()
    for row, n_tokens in zip(manifest.iter_rows(named=True), tokens):
        record = {k: row[k] for k in ("clip_id", "source", "caption", "caption_sha256",
                                      "content_hash", "image_path")}
        record.update({column: row.get(column) for column in CLIP_COLUMNS})
        record["source_video"] = row.get("source_video") or row["clip_id"]
        record.update(caption_tokens=n_tokens,
                      caption_truncated=None if n_tokens is None else n_tokens > limit)
        reason, message = row["issue_reason"], row["issue_message"]
        if reason is None:
            path = root / record["source_video"]
            segment = None if row.get("start_s") is None else (row["start_s"], row["end_s"])
            fields, reason, message = verdict(path, policy, limits, row["size_bytes"], segment,
                                              probes(path))
            record.update(fields)
            if reason is not None:
                message = f"{row['clip_id']}: {message}"
        if reason is None and record["caption_truncated"]:
            message = (f"{row['source']}: caption has {n_tokens} tokens; T5 reads the first "
                       f"{limit} (truncated)")
        stage = row.get("issue_stage") if reason == row["issue_reason"] else None
        record.update(accepted=reason is None, reason=reason, message=message,
                      stage=None if reason is None else stage or "validate")
        records.append(record)
    return pl.DataFrame(records, schema=VALIDATED_SCHEMA)


def rejects_of(validated: pl.DataFrame) -> pl.DataFrame:
    return validated.filter(~pl.col("accepted")).select(REJECT_COLUMNS)
