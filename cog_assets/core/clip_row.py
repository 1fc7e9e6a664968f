"""The clip row: every column a clip carries from the manifest to the finished index, with
its one polars type.

Each stage's table is a selection of these columns in the order it lists them (`columns`),
so a column has one name and one type everywhere: a stage that adds a column adds it here.
"""

from __future__ import annotations

import polars as pl

SCORE_COLUMNS = ("motion_score", "brightness", "sharpness", "aesthetic_score")
# Where each clip comes from and how it scored: whole manifest rows and segments of long
# videos alike (null scores: not measured). The loader and the exports pass these through.
# Where each clip's caption came from: the text it came with (manifest, inherited or table;
# null: none) and the model that wrote its final caption (null: a person did).
CAPTION_COLUMNS = ("original_caption", "caption_model")
CLIP_COLUMNS = ("source_video", "start_s", "end_s", "caption_source", *SCORE_COLUMNS,
                *CAPTION_COLUMNS)
# The CLIP_COLUMNS that hold text (the others are numbers).
CLIP_TEXT_COLUMNS = ("source_video", "caption_source", *CAPTION_COLUMNS)
# What the finished dataset's rejects table holds: one row per clip that will not be trained on.
REJECT_COLUMNS = ("clip_id", "source", "reason", "message", "stage")

CLIP_ROW: dict[str, type[pl.DataType]] = {
    # what the manifest says, and the file it names
    "clip_id": pl.String,  # the path relative to the data root (#t=start,end for a segment)
    "source": pl.String,  # the manifest file and line it came from
    "caption": pl.String,
    "caption_sha256": pl.String,
    "image_path": pl.String,  # I2V first-frame image (images.txt or an image column)
    "size_bytes": pl.Int64,
    "mtime_ns": pl.Int64,
    "content_hash": pl.String,  # sha256 of the video's bytes
    "file_stamp": pl.String,  # inode, size, mtime, ctime when hashed: a later change defers it
    "issue_reason": pl.String,  # a verdict reached before probing (manifest, scene splitting)
    "issue_message": pl.String,
    # the segment it is (a whole file: 0 to its duration) and how it scored
    "source_video": pl.String,
    "start_s": pl.Float64,
    "end_s": pl.Float64,
    "caption_source": pl.String,
    **{name: pl.Float64 for name in SCORE_COLUMNS},
    "scan_key": pl.String,
    "issue_stage": pl.String,
    # the caption step: the text the clip came with, who wrote the final caption, and the
    # keys of the written captions (the VLM's, the polishing LLM's) and of the thumbnail of a
    # clip that still needs a caption
    "original_caption": pl.String,
    "caption_model": pl.String,
    "caption_key": pl.String,
    "polish_key": pl.String,
    "thumbnail_key": pl.String,
    # the probe, after rotation and SAR
    "codec": pl.String,
    "pix_fmt": pl.String,
    "width": pl.Int64,
    "height": pl.Int64,
    "sar": pl.Float64,
    "rotation": pl.Int64,
    "fps": pl.Float64,
    "duration_s": pl.Float64,
    "frame_count": pl.Int64,
    "has_audio": pl.Boolean,
    # the verdict
    "bucket": pl.String,  # FxHxW
    "caption_tokens": pl.Int64,
    "caption_truncated": pl.Boolean,
    "accepted": pl.Boolean,
    "reason": pl.String,
    "message": pl.String,
    "stage": pl.String,
    # the artefacts
    "frames_key": pl.String,
    "num_frames": pl.Int64,
    "status": pl.String,  # computed, reused or rejected by the step
    "latent_key": pl.String,
    "embedding_key": pl.String,
}


def columns(*names: str) -> dict[str, type[pl.DataType]]:
    """The schema of a table holding these clip-row columns, in this order."""
    return {name: CLIP_ROW[name] for name in names}
