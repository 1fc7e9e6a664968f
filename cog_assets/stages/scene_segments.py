"""scene_segments: source videos cut into scored clips, before validation.

With `split_scenes` (or any quality threshold, or aesthetic weights) every source video of the
shard is probed, checked against the limits and scanned once (`media.scan`: PySceneDetect's
cuts and quality samples). The scan is kept in the store under a key of the video's content
hash and the scan's settings, so an unchanged video is never scanned again and a changed one
is re-scanned alone. Each row out is then a clip: a segment of its source (or the whole source
when not splitting) with its caption, its scores and, when it is to be dropped, the reason
(`issue_reason`), which validated_clips records as a reject.

With all of it off, every manifest row passes through as one clip, as before this stage.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch

from cog_assets.core.choices import ArtifactKind, CaptionSource, Status
from cog_assets.core.clip_row import CLIP_COLUMNS, SCORE_COLUMNS, columns
from cog_assets.core.config import MediaLimits, SegmentSettings, SourceSettings
from cog_assets.core.keys import caption_sha256, scan_key
from cog_assets.core.reasons import RejectReason
from cog_assets.media.errors import MediaError
from cog_assets.media.limits import check_file_size
from cog_assets.media.probe import VideoProbe
from cog_assets.media.probe_task import ProbeTask, probe_task
from cog_assets.media.scan import (
    ScanSpec,
    ScanTask,
    SourceScan,
    default_threads,
    scan_source,
)
from cog_assets.media.scene_cuts import (
    Segment,
    segment_id,
    segment_scores,
    split_scenes,
)
from cog_assets.runtime.worker_pool import (
    default_workers,
    prefetch_map,
)
from cog_assets.sources.segment_captions import (
    SegmentCaption,
    match_caption,
    read_segment_captions,
)
from cog_assets.stages.common import Reuse, worker_failure
from cog_assets.stages.manifest import MANIFEST_SCHEMA, with_id_token
from cog_assets.store.content_store import ContentStore

STAGE = "segments"
SEGMENTS_SCHEMA = {**MANIFEST_SCHEMA, **columns(*CLIP_COLUMNS, "scan_key", "issue_stage")}
SOURCES_SCHEMA = {"source_video": pl.String, "status": pl.String, "duration_s": pl.Float64,
                  "cuts": pl.Int64, "segments": pl.Int64, "kept": pl.Int64,
                  "kept_s": pl.Float64, "dropped_s": pl.Float64,
                  "decode_errors": pl.Int64, "scan_seconds": pl.Float64}
THRESHOLD_REASONS = {"motion_score": (RejectReason.low_motion, "min_motion"),
                     "brightness": (RejectReason.too_dark, "min_brightness"),
                     "sharpness": (RejectReason.blurry, "min_sharpness"),
                     "aesthetic_score": (RejectReason.low_aesthetic, "min_aesthetic")}



def scan_time_limit(limits: MediaLimits, probe: VideoProbe) -> float:
    """A scan decodes the whole source: `decode_timeout_s` per started minute of it."""
    minutes = (probe.duration_s or 0.0) / 60.0
    return limits.decode_timeout_s * max(1.0, minutes)


@dataclass
class _Source:
    """One scannable manifest row and what became of its scan."""

    row: dict
    key: str
    probe: VideoProbe
    scan: SourceScan | None = None
    status: Status | None = None
    error: tuple[RejectReason, str] | None = None
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)


def _put(store: ContentStore, key: str, scan: SourceScan, source: str) -> None:
    store.put_tensors(ArtifactKind.scene_scan, key, {
        "cuts": torch.from_numpy(scan.cuts), "samples": torch.from_numpy(scan.samples),
        "end_s": torch.tensor([scan.end_s], dtype=torch.float64),
        "frames": torch.tensor([scan.frames], dtype=torch.int64),
        "decode_errors": torch.from_numpy(scan.decode_errors)}, {"source_video": source})


def _get(store: ContentStore, key: str) -> SourceScan | None:
    """The stored scan, or None when missing or unreadable (then it is scanned again)."""
    if not store.has(ArtifactKind.scene_scan, key):
        return None
    try:
        t = store.get_tensors(ArtifactKind.scene_scan, key)
        return SourceScan(cuts=t["cuts"].numpy(), samples=t["samples"].numpy(),
                          end_s=float(t["end_s"][0]), frames=int(t["frames"][0]),
                          decode_errors=t["decode_errors"].numpy())
    except Exception:  # noqa: BLE001 - corrupt bytes, a missing tensor: recompute, never reuse
        return None


def _failure(exc: BaseException, source: str, limit_s: float | None) -> tuple[RejectReason, str]:
    return worker_failure(exc, source, doing="scanning for scenes", limit_s=limit_s,
                          setting="decode_timeout_s per minute of footage",
                          timeout=RejectReason.decode_timeout, crash=RejectReason.decode_crash,
                          crashed="the decoder crashed ({exit}) while scanning this video for "
                                  "scenes")


def _passthrough(row: dict) -> dict:
    """A manifest row as one clip: its whole file, its own caption, no scores."""
    return {**row, "source_video": row["clip_id"], "start_s": None, "end_s": None,
            "caption_source": CaptionSource.manifest if row["caption"] else None,
            **{name: None for name in SCORE_COLUMNS}, "scan_key": None, "issue_stage": None}


def _verdict(clip_id: str, segment: Segment, caption: str | None, scores: dict,
             settings: SegmentSettings, source_row: dict) -> tuple[RejectReason | None, str | None]:
    if settings.split_scenes and segment.duration_s < settings.min_clip_s:
        return RejectReason.segment_too_short, (
            f"{clip_id}: the segment lasts {segment.duration_s:.3f} s, under min_clip_s "
            f"{settings.min_clip_s:g} s")
    if not caption:
        return RejectReason.no_caption, (
            f"{clip_id}: no caption: {source_row['source']} gives none and no segment_captions "
            "row covers this segment")
    failing = []
    for column, minimum in settings.thresholds().items():
        value = scores[column]
        if minimum is not None and value is not None and value < minimum:
            reason, name = THRESHOLD_REASONS[column]
            failing.append((reason, f"{column} {value:.4g} < {name} {minimum:g}"))
    if failing:
        return failing[0][0], f"{clip_id}: " + "; ".join(text for _, text in failing)
    return None, None


def _clips(source: _Source, settings: SegmentSettings,
           captions: dict[str, list[SegmentCaption]], id_token: str | None) -> Iterator[dict]:
    """The rows of one scanned source: its segments (or itself), captioned and judged. A
    caption of the segment table gets the trigger word as the manifest's captions did."""
    row, scan = source.row, source.scan
    video = row["clip_id"]
    if settings.split_scenes:
        pieces = split_scenes(scan.cuts, scan.end_s, settings.max_clip_s, settings.min_clip_s)
    else:
        pieces = [Segment(0.0, scan.end_s)]
    for segment in pieces:
        scores = segment_scores(scan.samples, segment)
        if settings.split_scenes:
            clip_id = segment_id(video, segment)
            matched = match_caption(captions.get(video, []), segment.start_s, segment.end_s)
            if matched is not None:
                caption = with_id_token(matched.caption, id_token)
                origin = CaptionSource.segment_table
            elif row["caption"]:
                caption, origin = row["caption"], CaptionSource.inherited
            else:
                caption, origin = None, None
            # An I2V first-frame picture shows the source's start: its first segment's only.
            bounds = {"start_s": segment.start_s, "end_s": segment.end_s,
                      "image_path": row["image_path"] if segment.start_s == 0 else None}
        else:
            clip_id, caption, origin = video, row["caption"], CaptionSource.manifest
            bounds = {"start_s": None, "end_s": None}
        reason, message = _verdict(clip_id, segment, caption, scores, settings, row)
        yield {**row, "clip_id": clip_id, "caption": caption or "",
               "caption_sha256": caption_sha256(caption or ""), "source_video": video,
               **bounds, "caption_source": origin, **scores, "scan_key": source.key,
               "issue_reason": reason, "issue_message": message,
               "issue_stage": STAGE if reason else None}


def split_segments(manifest: pl.DataFrame, sources: SourceSettings, settings: SegmentSettings,
                   limits: MediaLimits, store: ContentStore, *, workers: int | None = None
                   ) -> tuple[pl.DataFrame, Reuse, pl.DataFrame]:
    """(one row per clip, scans computed/reused, one row per scanned source).

    Sources that fail their probe or limits pass through unscanned, for validated_clips to
    reject with that reason; sources whose scan fails (decode error, timeout, crash) become one
    rejected row with the reason. `workers`: scan processes (default: one per core; 0: here)."""
    stats = Reuse()
    started = time.perf_counter()
    rows = manifest.to_dicts()
    if not settings.active:
        return (pl.DataFrame([_passthrough(r) for r in rows], schema=SEGMENTS_SCHEMA), stats,
                pl.DataFrame(schema=SOURCES_SCHEMA))
    spec = ScanSpec(settings.scene_detector if settings.split_scenes else None,
                    settings.scene_threshold if settings.split_scenes else None,
                    settings.aesthetic_weights)
    root = Path(sources.data_root)
    plan = _plan(rows, root, spec, settings, limits, workers)
    _scan_missing(plan, root, spec, limits, store, stats, workers)
    captions = read_segment_captions(sources) if settings.split_scenes else {}
    out, summary = [], []
    for item in plan:
        if isinstance(item, dict):
            out.append(item)
        elif item.scan is None:
            reason, message = item.error
            out.append({**_passthrough(item.row), "issue_reason": reason, "issue_message": message,
                        "issue_stage": STAGE, "scan_key": item.key})
            summary.append(_summary(item, []))
        else:
            clips = list(_clips(item, settings, captions, sources.id_token))
            out.extend(clips)
            summary.append(_summary(item, clips))
    table = pl.DataFrame(out, schema=SEGMENTS_SCHEMA)
    stats.rejected = int(table["issue_stage"].eq(STAGE).sum())
    stats.seconds = time.perf_counter() - started
    stats.extra.update(sources_scanned=len(summary), segments=sum(s["segments"] for s in summary),
                       footage_dropped_s=round(sum(s["dropped_s"] or 0.0 for s in summary), 3))
    return table, stats, pl.DataFrame(summary, schema=SOURCES_SCHEMA)


def _plan(rows: list[dict], root: Path, spec: ScanSpec, settings: SegmentSettings,
          limits: MediaLimits, workers: int | None) -> list[_Source | dict]:
    """Per manifest row: the source to scan (probed, within the limits), or the row as it
    passes through (already rejected, or failing its probe: validated_clips says why).
    Probes run in isolated workers, each within `probe_timeout_s`, as validation's do."""
    aesthetic = None
    if settings.aesthetic_weights:
        from cog_assets.models.aesthetic import (
            aesthetic_identity,  # torch only when scoring
        )

        aesthetic = aesthetic_identity(settings.aesthetic_weights)
    plan: list[_Source | dict] = []
    probing: list[tuple[int, dict]] = []  # (plan position, row) of each probe task
    for row in rows:
        scannable = row["issue_reason"] is None or (
            settings.split_scenes and row["issue_reason"] == RejectReason.caption_empty)
        if not scannable:
            plan.append(_passthrough(row))
            continue
        source = row
        if row["issue_reason"] is not None:  # an empty caption: its segments may get their own
            source = {**row, "issue_reason": None, "issue_message": None}
        try:
            check_file_size(limits, row["clip_id"], row["size_bytes"])
        except MediaError:  # validated_clips rejects it with this reason
            plan.append(_passthrough(row))
            continue
        probing.append((len(plan), source))
        # until its probe says otherwise; a failed probe keeps the row's own verdict (an
        # empty caption stays rejected even if validated_clips' probe then succeeds)
        plan.append(_passthrough(row))
    tasks = [ProbeTask(str(root / row["clip_id"]), str(root), row.get("file_stamp"), limits)
             for _, row in probing]
    workers = min(default_workers() if workers is None else workers, len(tasks))
    for outcome in prefetch_map(probe_task, tasks, workers=workers,
                                timeout_s=limits.probe_timeout_s,
                                preload=(probe_task.__module__,)):
        position, row = probing[outcome.index]
        if outcome.ok:  # else validated_clips probes it again and rejects it with the reason
            plan[position] = _Source(row, scan_key(row["content_hash"], spec.key_parts(aesthetic)),
                                     outcome.value)
    return plan


def _scan_missing(plan: list[_Source | dict], root: Path, spec: ScanSpec, limits: MediaLimits,
                  store: ContentStore, stats: Reuse, workers: int | None) -> None:
    """Give every planned source its scan: from the store, or scanned now (once per key, in
    worker processes, each within its time limit) and stored."""
    by_key: dict[str, list[_Source]] = {}
    for item in plan:
        if isinstance(item, _Source):
            by_key.setdefault(item.key, []).append(item)
    todo: list[tuple[str, _Source]] = []  # (key, the source that is scanned for it)
    for key, same in by_key.items():
        scan = _get(store, key)
        for source in same:
            source.scan, source.status = scan, Status.reused if scan is not None else None
        if scan is not None:
            stats.reused += 1
        else:
            todo.append((key, same[0]))
    threads = default_threads(len(todo))
    tasks = [ScanTask(str(root / first.row["clip_id"]), first.probe.width, first.probe.height,
                      first.probe.rotation, first.probe.fps, spec, threads=threads,
                      time_limit_s=scan_time_limit(limits, first.probe), root=str(root),
                      stamp=first.row.get("file_stamp"))
             for _, first in todo]
    workers = min(default_workers() if workers is None else workers, len(todo))
    footage = 0.0
    for outcome in prefetch_map(scan_source, tasks, workers=workers, ordered=False,
                                timeout_s=lambda task: task.time_limit_s,
                                preload=(scan_source.__module__,)):
        same = by_key[todo[outcome.index][0]]
        if outcome.ok:
            _put(store, same[0].key, outcome.value, same[0].row["clip_id"])
            stats.computed += 1
            footage += outcome.value.end_s
        for source in same:
            source.seconds = outcome.seconds
            if outcome.ok:
                source.scan, source.status = outcome.value, Status.computed
            else:
                source.status = Status.rejected
                source.error = _failure(outcome.error, source.row["clip_id"],
                                        outcome.item.time_limit_s)
        outcome.value = None
    stats.extra["footage_scanned_s"] = round(footage, 3)


def _summary(source: _Source, clips: list[dict]) -> dict:
    """One scanned source: its segments, how many are kept, and the footage in them and not
    (too-short scenes and rests, clips under a threshold or without a caption; null when
    the scan failed)."""
    scan = source.scan
    kept = [c for c in clips if c["issue_reason"] is None]
    kept_s = sum((c["end_s"] if c["end_s"] is not None else scan.end_s)
                 - (c["start_s"] or 0.0) for c in kept)
    duration = None if scan is None else scan.end_s
    return {"source_video": source.row["clip_id"], "status": source.status,
            "duration_s": None if scan is None else round(scan.end_s, 3),
            "cuts": None if scan is None else len(scan.cuts), "segments": len(clips),
            "kept": len(kept), "kept_s": round(kept_s, 3),
            "dropped_s": None if duration is None else round(max(0.0, duration - kept_s), 3),
            "decode_errors": None if scan is None else len(scan.decode_errors),
            "scan_seconds": round(source.seconds, 3)}
