"""`clips.parquet` beside an export's manifests: each exported clip's origin and scores.

The trainers never read it (their layouts are unchanged); it keeps, per file stem, what the
finished index knew about the clip: its source video and times, where its caption came from
and its quality scores (layout.CLIP_COLUMNS), so a user can trace or filter what was trained;
and the key of the clip file the export links for it, which `cog-assets gc` keeps.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from cog_assets.core.clip_row import CLIP_COLUMNS
from cog_assets.exports import atomic
from cog_assets.exports.source import ClipRecord

CLIP_TABLE = "clips.parquet"
TEXT_COLUMNS = ("source_video", "caption_source")  # the other CLIP_COLUMNS are numbers
# The key of the clip file an export links (null: none): what `cog-assets gc` keeps for it.
CLIP_FILE_KEY = "clip_file_key"


def write_clip_table(out: Path, clips: list[ClipRecord], stems: dict[str, str],
                     clip_files: Mapping[str, str] | None = None) -> Path:
    """`clip_files`: clip id -> the key of the clip file the export links for it."""
    keys = clip_files or {}
    rows = [{"stem": stems[clip.clip_id], "clip_id": clip.clip_id, "caption": clip.caption,
             "num_frames": clip.num_frames, "height": clip.height, "width": clip.width,
             **{column: dict(clip.extra).get(column) for column in CLIP_COLUMNS},
             CLIP_FILE_KEY: keys.get(clip.clip_id)}
            for clip in clips]
    schema = {"stem": pl.String, "clip_id": pl.String, "caption": pl.String,
              "num_frames": pl.Int64, "height": pl.Int64, "width": pl.Int64,
              **{column: pl.String if column in TEXT_COLUMNS else pl.Float64
                 for column in CLIP_COLUMNS}, CLIP_FILE_KEY: pl.String}
    buffer = io.BytesIO()
    pl.DataFrame(rows, schema=schema).write_parquet(buffer)
    return atomic.write_bytes(out / CLIP_TABLE, buffer.getvalue())
