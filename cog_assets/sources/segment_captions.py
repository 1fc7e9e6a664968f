"""Captions for segments of long videos: the `segment_captions` table, matched by overlap.

The table (`.jsonl`, `.csv` or `.parquet`, named by the `segment_captions` setting, relative
to the data root) has one row per captioned stretch of a video: its path (a video column, as
in manifests), `start_s`, `end_s` and a caption column. A segment takes the caption of the row
that overlaps it most, provided that row covers at least half of the segment; a row with an
empty caption captions nothing. A malformed table or row stops the run with a ManifestError
naming the file and line: a caption is never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cog_assets.core.config import SourceSettings
from cog_assets.sources.manifests import (
    DEFAULT_CAPTION_COLUMNS,
    DEFAULT_VIDEO_COLUMNS,
    ManifestError,
    NotAManifest,
    RootGuard,
    pick_column,
    segment_captions_path,
    table_records,
)

MIN_COVER = 0.5  # a row must cover at least this share of a segment to caption it
TIME_COLUMNS = ("start_s", "end_s")


@dataclass(frozen=True)
class SegmentCaption:
    start_s: float
    end_s: float
    caption: str
    source: str  # "<table>:<line>"


def _seconds(value, path: Path, line: int, column: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ManifestError(f"{path}:{line}: {column} is {value!r}, not a number of seconds"
                            ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ManifestError(f"{path}:{line}: {column} is {value!r}; it must be >= 0")
    return seconds


def read_segment_captions(sources: SourceSettings) -> dict[str, list[SegmentCaption]]:
    """The table's rows by video (its path relative to the data root); {} when unset. Read
    as manifests are (the same readers: a row's line is where its record starts)."""
    path = segment_captions_path(sources)
    if path is None:
        return {}
    if not path.exists() and not path.is_symlink():
        raise ManifestError(f"segment_captions table {path} does not exist")
    try:
        columns, records = table_records(path, Path(sources.data_root))
        video_col = pick_column(columns, sources.video_column, DEFAULT_VIDEO_COLUMNS, "video")
        caption_col = pick_column(columns, sources.caption_column, DEFAULT_CAPTION_COLUMNS,
                                  "caption")
        for name in TIME_COLUMNS:
            pick_column(columns, name, (name,), name)
    except NotAManifest as exc:
        raise ManifestError(f"segment_captions table {path}: {exc}") from None
    guard = RootGuard(Path(sources.data_root))
    by_video: dict[str, list[SegmentCaption]] = {}
    for record in records:
        line, row = record.line, record.values
        if record.problem is not None:
            raise ManifestError(f"{path}:{line}: {record.problem[1]}")
        cell = row.get(video_col)
        video, reason, why = guard.check(None if cell is None else str(cell), f"{path.name}:{line}",
                                         must_exist=False)
        if reason is not None:
            raise ManifestError(f"{path}:{line}: {why}")
        if row.get("start_s") in (None, "") and row.get("end_s") in (None, ""):
            raise ManifestError(
                f"{path}:{line}: {video} has no start_s and end_s: a whole video's "
                "caption goes in its manifest's caption column, not in segment_captions "
                "(needs_captions lists whole-file clips with empty times)")
        start = _seconds(row.get("start_s"), path, line, "start_s")
        end = _seconds(row.get("end_s"), path, line, "end_s")
        if end <= start:
            raise ManifestError(f"{path}:{line}: end_s {end:g} is not after start_s {start:g}")
        caption = str(row.get(caption_col) or "").strip()
        by_video.setdefault(video, []).append(
            SegmentCaption(start, end, caption, f"{path.name}:{line}"))
    return by_video


def match_caption(captions: list[SegmentCaption], start_s: float, end_s: float
                  ) -> SegmentCaption | None:
    """The row overlapping [start_s, end_s) most, if it covers at least MIN_COVER of it."""
    best, best_overlap = None, 0.0
    for row in captions:
        if not row.caption:
            continue
        overlap = min(row.end_s, end_s) - max(row.start_s, start_s)
        if overlap > best_overlap:
            best, best_overlap = row, overlap
    if best is None or best_overlap < MIN_COVER * (end_s - start_s):
        return None
    return best


def captions_digest(captions: Mapping[str, list[SegmentCaption]], video: str) -> str:
    """What the table says about one video, as text for the upload fingerprint."""
    return ";".join(f"{c.start_s:g}-{c.end_s:g}:{c.caption}" for c in captions.get(video, []))
