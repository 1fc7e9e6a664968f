"""validated_clips: probe every manifest row, give it a verdict and a bucket, before decoding.

Probes run in isolated worker processes (`prefetch_map`), each with the `probe_timeout_s`
limit, so a file that makes FFmpeg hang or crash costs that file only: it is rejected as
`probe_timeout` or `probe_crash`, and every other row still gets its verdict. The pixel and
duration limits are checked on a first look at the headers, before FFmpeg decodes anything.

Captions are counted with the profile's real tokenizer: one over the limit is kept (T5 sees
its first tokens, as in training) but flagged, so a user can see what the model never reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import polars as pl

from cog_assets.config import MediaLimits
from cog_assets.frame_policy import FramePolicy
from cog_assets.media.decode import half_frame
from cog_assets.media.errors import MediaError
from cog_assets.media.limits import check_file_size, check_probe
from cog_assets.media.probe import VideoProbe, probe_video
from cog_assets.media.probe_task import ProbeTask, probe_task
from cog_assets.prefetch import TaskTimeout, WorkerCrash, describe_exit, prefetch_map
from cog_assets.reasons import RejectReason
from cog_assets.stages.common import REJECT_COLUMNS

VALIDATED_SCHEMA = {
    "clip_id": pl.String, "source": pl.String, "caption": pl.String,
    "caption_sha256": pl.String, "content_hash": pl.String, "file_stamp": pl.String,
    "image_path": pl.String, "codec": pl.String, "pix_fmt": pl.String, "width": pl.Int64, "height": pl.Int64,
    "sar": pl.Float64, "rotation": pl.Int64, "fps": pl.Float64, "duration_s": pl.Float64,
    "frame_count": pl.Int64, "has_audio": pl.Boolean, "bucket": pl.String,
    "caption_tokens": pl.Int64, "caption_truncated": pl.Boolean, "accepted": pl.Boolean,
    "reason": pl.String, "message": pl.String, "stage": pl.String,
}
PROBE_FIELDS = ("codec", "pix_fmt", "width", "height", "sar", "rotation", "fps", "duration_s",
                "frame_count", "has_audio")


def judge(probe: VideoProbe, name: str, policy: FramePolicy, limits: MediaLimits
          ) -> tuple[dict, str | None, str | None]:
    """(probe fields with the bucket, reason, message) of a probed video; reason None:
    accepted."""
    fields = {field: getattr(probe, field) for field in PROBE_FIELDS}
    try:
        check_probe(limits, name, probe)
    except MediaError as exc:
        return fields, exc.reason, exc.message
    bucket = policy.assign(probe.width, probe.height, probe.duration_s, half_frame(probe))
    if bucket is None:
        return fields, RejectReason.too_short, (
            f"{probe.duration_s:.3f} s long; the shortest bucket needs "
            f"{policy.shortest_window_s():.3f} s at {policy.profile.fps} fps")
    fields["bucket"] = bucket.key
    return fields, None, None


def verdict(path: Path, policy: FramePolicy, limits: MediaLimits,
            size_bytes: int | None = None) -> tuple[dict, str | None, str | None]:
    """`judge` of one video probed here, in this process (no timeout)."""
    try:
        check_file_size(limits, path.name, size_bytes)
        probe = probe_video(path)
    except MediaError as exc:
        return {}, exc.reason, exc.message
    return judge(probe, path.name, policy, limits)


def _probe_failure(exc: BaseException, timeout_s: float) -> tuple[RejectReason, str]:
    """(reason, message) of a probe that rejects only its file; anything else is a bug."""
    if isinstance(exc, MediaError):
        return exc.reason, exc.message
    if isinstance(exc, TaskTimeout):
        return RejectReason.probe_timeout, (
            f"reading its headers took longer than the {timeout_s:g} s limit "
            "(probe_timeout_s); its worker was stopped")
    if isinstance(exc, WorkerCrash):
        return RejectReason.probe_crash, (
            f"the probing process died ({describe_exit(exc.exitcode)}) on this file")
    raise exc


def validate_clips(manifest: pl.DataFrame, data_root: str | os.PathLike, policy: FramePolicy,
                   limits: MediaLimits,
                   count_tokens: Callable[[list[str]], list[int]] | None = None, *,
                   workers: int | None = None,
                   probe: Callable[[ProbeTask], VideoProbe] = probe_task) -> pl.DataFrame:
    """One row per manifest row: its probe, bucket and `accepted`, or why it is rejected.

    Files are probed by `probe` (module-level, picklable) in `workers` isolated processes
    (default os.cpu_count(); 0: here, with no timeout), each within `limits.probe_timeout_s`.
    """
    root = Path(data_root)
    limit = policy.profile.text_max_length
    captions = manifest["caption"].to_list()
    tokens = count_tokens(captions) if count_tokens and captions else [None] * len(captions)
    records: list[dict] = []
    probed: list[int] = []  # the record index of each probe task, by task index

    def tasks():
        """A probe task per row that is not refused already (read lazily by the pool)."""
        for row, n_tokens in zip(manifest.iter_rows(named=True), tokens):
            record = {k: row.get(k) for k in ("clip_id", "source", "caption", "caption_sha256",
                                              "content_hash", "file_stamp", "image_path")}
            record.update(caption_tokens=n_tokens,
                          caption_truncated=None if n_tokens is None else n_tokens > limit,
                          reason=row["issue_reason"], message=row["issue_message"])
            records.append(record)
            if record["reason"] is not None:
                continue
            try:
                check_file_size(limits, row["clip_id"], row["size_bytes"])
            except MediaError as exc:
                record.update(reason=exc.reason, message=f"{row['clip_id']}: {exc.message}")
                continue
            probed.append(len(records) - 1)
            yield ProbeTask(str(root / row["clip_id"]), str(root), row.get("file_stamp"),
                            limits)

    outcomes = prefetch_map(probe, tasks(), workers=workers, timeout_s=limits.probe_timeout_s,
                            preload=(probe.__module__,))
    with closing(outcomes):  # no worker is started when there is nothing to probe
        for outcome in outcomes:
            record = records[probed[outcome.index]]
            clip_id = record["clip_id"]
            if outcome.ok:
                fields, reason, message = judge(outcome.value, Path(clip_id).name, policy,
                                                limits)
                record.update(fields)
            else:
                reason, message = _probe_failure(outcome.error, limits.probe_timeout_s)
            record.update(reason=reason,
                          message=None if reason is None else f"{clip_id}: {message}")
    for record in records:
        reason = record["reason"]
        if reason is None and record["caption_truncated"]:
            record["message"] = (f"{record['source']}: caption has {record['caption_tokens']} "
                                 f"tokens; T5 reads the first {limit} (truncated)")
        record.update(accepted=reason is None,
                      stage=None if reason is None else "validate")
    return pl.DataFrame(records, schema=VALIDATED_SCHEMA)


def rejects_of(validated: pl.DataFrame) -> pl.DataFrame:
    return validated.filter(~pl.col("accepted")).select(REJECT_COLUMNS)
