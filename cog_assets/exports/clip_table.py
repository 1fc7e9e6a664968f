"""`clips.parquet` and `captions.jsonl` beside an export's manifests: each exported clip's
origin, scores and caption.

The trainers never read them (their layouts are unchanged). `clips.parquet` keeps, per file
stem, what the finished index knew about the clip: its source video and times, where its
caption came from and its quality scores (layout.CLIP_COLUMNS), so a user can trace or filter
what was trained. `captions.jsonl` is the captions for review and editing, one line per clip:
the caption trained on, where it came from (manifest, inherited, segment_table, generated,
polished), the text the clip came with and the model that wrote it; its `video`, `start_s`,
`end_s` and `caption` are the columns a `segment_captions` table has, so an edited copy can be
given back as one (with split_scenes). Each row of `clips.parquet` also names the key of the
clip file the export links for the clip, which `cog-assets gc` keeps.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from cog_assets.core.clip_row import CLIP_COLUMNS, CLIP_TEXT_COLUMNS
from cog_assets.exports import atomic
from cog_assets.exports.source import ClipRecord

CLIP_TABLE = "clips.parquet"
CAPTIONS_FILE = "captions.jsonl"
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
              **{column: pl.String if column in CLIP_TEXT_COLUMNS else pl.Float64
                 for column in CLIP_COLUMNS}, CLIP_FILE_KEY: pl.String}
    buffer = io.BytesIO()
    pl.DataFrame(rows, schema=schema).write_parquet(buffer)
    return atomic.write_bytes(out / CLIP_TABLE, buffer.getvalue())


def write_captions_file(out: Path, clips: list[ClipRecord], stems: dict[str, str]) -> Path:
    lines = []
    for clip in clips:
        extra = dict(clip.extra)
        lines.append(json.dumps({
            "video": clip.source_video, "start_s": extra.get("start_s"),
            "end_s": extra.get("end_s"), "caption": clip.caption, "clip_id": clip.clip_id,
            "stem": stems[clip.clip_id], "caption_source": extra.get("caption_source"),
            "original_caption": extra.get("original_caption"),
            "caption_model": extra.get("caption_model")}, ensure_ascii=False))
    return atomic.write_bytes(out / CAPTIONS_FILE, "".join(f"{line}\n" for line in lines)
                              .encode("utf-8"))
