"""validated_clips: probe every clip, give it a verdict and a bucket, before decoding.

A clip is a manifest row or, with scene splitting, a segment of one (`source_video` between
`start_s` and `end_s`): a segment is probed as its source (once per source) and bucketed by its
own length.

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

from cog_assets.core.clip_row import CLIP_COLUMNS, REJECT_COLUMNS, columns
from cog_assets.core.config import MediaLimits
from cog_assets.core.reasons import RejectReason
from cog_assets.media.decode import half_frame, segment_sampling_span
from cog_assets.media.errors import MediaError
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.media.limits import check_file_size, check_probe
from cog_assets.media.probe import VideoProbe, probe_video
from cog_assets.media.probe_task import ProbeTask, probe_task
from cog_assets.runtime.worker_pool import prefetch_map
from cog_assets.stages.common import worker_failure

PROBE_FIELDS = ("codec", "pix_fmt", "width", "height", "sar", "rotation", "fps", "duration_s",
                "frame_count", "has_audio")
VALIDATED_SCHEMA = columns(
    "clip_id", "source", "caption", "caption_sha256", "content_hash", "file_stamp",
    "image_path", *PROBE_FIELDS, "bucket", "caption_tokens", "caption_truncated", "accepted",
    "reason", "message", "stage", *CLIP_COLUMNS)


def judge(probe: VideoProbe, name: str, policy: FramePolicy, limits: MediaLimits,
          segment: tuple[float, float] | None = None) -> tuple[dict, str | None, str | None]:
    """(probe fields with the bucket, reason, message) of a probed video, or of its `segment`
    (start_s, end_s), bucketed by the segment's own length; reason None: accepted."""
    fields = {field: getattr(probe, field) for field in PROBE_FIELDS}
    try:
        check_probe(limits, name, probe)
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
    return worker_failure(exc, None, doing="reading its headers", limit_s=timeout_s,
                          setting="probe_timeout_s", timeout=RejectReason.probe_timeout,
                          crash=RejectReason.probe_crash,
                          crashed="the probing process died ({exit}) on this file")


def validate_clips(manifest: pl.DataFrame, data_root: str | os.PathLike, policy: FramePolicy,
                   limits: MediaLimits,
                   count_tokens: Callable[[list[str]], list[int]] | None = None, *,
                   workers: int | None = None,
                   probe: Callable[[ProbeTask], VideoProbe] = probe_task) -> pl.DataFrame:
    """One row per clip: its probe, bucket and `accepted`, or why it is rejected.
    Each source is probed once by `probe` (module-level, picklable) in `workers` isolated
    processes (default os.cpu_count(); 0: here, with no timeout), within
    `limits.probe_timeout_s`."""
    root = Path(data_root)
    limit = policy.profile.text_max_length
    captions = manifest["caption"].to_list()
    tokens = count_tokens(captions) if count_tokens and captions else [None] * len(captions)
    records: list[dict] = []
    waiting: dict[str, list[dict]] = {}  # source video -> the records its probe decides
    tasks: list[ProbeTask] = []
    for row, n_tokens in zip(manifest.iter_rows(named=True), tokens):
        record = {k: row.get(k) for k in ("clip_id", "source", "caption", "caption_sha256",
                                          "content_hash", "file_stamp", "image_path")}
        record.update({column: row.get(column) for column in CLIP_COLUMNS})
        record["source_video"] = row.get("source_video") or row["clip_id"]
        record.update(caption_tokens=n_tokens,
                      caption_truncated=None if n_tokens is None else n_tokens > limit,
                      reason=row["issue_reason"], message=row["issue_message"],
                      stage=row.get("issue_stage"))
        records.append(record)
        if record["reason"] is not None:
            continue
        try:
            check_file_size(limits, row["clip_id"], row["size_bytes"])
        except MediaError as exc:
            record.update(reason=exc.reason, message=f"{row['clip_id']}: {exc.message}",
                          stage=None)
            continue
        source = record["source_video"]
        if source not in waiting:
            waiting[source] = []
            tasks.append(ProbeTask(str(root / source), str(root), row.get("file_stamp"),
                                   limits))
        waiting[source].append(record)

    outcomes = prefetch_map(probe, tasks, workers=workers, timeout_s=limits.probe_timeout_s,
                            preload=(probe.__module__,))
    with closing(outcomes):  # no worker is started when there is nothing to probe
        for outcome in outcomes:
            source = Path(outcome.item.path).relative_to(root).as_posix()
            for record in waiting[source]:
                if outcome.ok:
                    segment = (None if record["start_s"] is None
                               else (record["start_s"], record["end_s"]))
                    fields, reason, message = judge(outcome.value, Path(source).name, policy,
                                                    limits, segment)
                    record.update(fields)
                else:
                    reason, message = _probe_failure(outcome.error, limits.probe_timeout_s)
                record.update(reason=reason, stage=None,
                              message=None if reason is None else f"{record['clip_id']}: {message}")
    for record in records:
        reason = record["reason"]
        if reason is None and record["caption_truncated"]:
            record["message"] = (f"{record['source']}: caption has {record['caption_tokens']} "
                                 f"tokens; T5 reads the first {limit} (truncated)")
        record.update(accepted=reason is None,
                      stage=None if reason is None else record["stage"] or "validate")
    return pl.DataFrame(records, schema=VALIDATED_SCHEMA)


def rejects_of(validated: pl.DataFrame) -> pl.DataFrame:
    return validated.filter(~pl.col("accepted")).select(REJECT_COLUMNS)
