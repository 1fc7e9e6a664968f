"""`clips.parquet` beside an export's manifests: each exported clip's origin and scores.

The trainers never read it (their layouts are unchanged); it keeps, per file stem, what the
finished index knew about the clip: its source video and times, where its caption came from
and its quality scores (layout.CLIP_COLUMNS), so a user can trace or filter what was trained.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from cog_assets.exports import atomic
from cog_assets.exports.source import ClipRecord
from cog_assets.layout import CLIP_COLUMNS

CLIP_TABLE = "clips.parquet"


def write_clip_table(out: Path, clips: list[ClipRecord], stems: dict[str, str]) -> Path:
    rows = [{"stem": stems[clip.clip_id], "clip_id": clip.clip_id, "caption": clip.caption,
             "num_frames": clip.num_frames, "height": clip.height, "width": clip.width,
             **{column: dict(clip.extra).get(column) for column in CLIP_COLUMNS}}
            for clip in clips]
    buffer = io.BytesIO()
    pl.DataFrame(rows, infer_schema_length=None).write_parquet(buffer)
    return atomic.write_bytes(out / CLIP_TABLE, buffer.getvalue())
