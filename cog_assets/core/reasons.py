"""Every reason a manifest row can be rejected for, with its meaning: the one list of them.

A rejected row is recorded in the shard's `rejects.parquet` with one of these reasons and a
message naming the file, manifest line or clip. The README's table of reasons is rendered
from this enumeration (`reasons_table()`; a test keeps the two in step).
"""

from __future__ import annotations

from cog_assets.core.choices import Choice


class RejectReason(Choice):
    """Why a row did not make it into the finished dataset."""

    def __new__(cls, value: str, meaning: str) -> "RejectReason":
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    # the manifest row itself
    missing_file = "missing_file", "the listed video (or I2V image) does not exist"
    not_a_file = "not_a_file", (
        "the path names a directory, FIFO, device or socket, not a regular file")
    null_path = "null_path", "the row names no video (an empty or null path cell)"
    invalid_path = "invalid_path", "the path holds a NUL byte, which no file name can"
    path_outside_root = "path_outside_root", (
        "the path is absolute, climbs out with `..`, or resolves outside the data root")
    duplicate_path = "duplicate_path", "the video is already listed by an earlier manifest row"
    caption_empty = "caption_empty", "the caption is empty"
    not_utf8 = "not_utf8", "the manifest line (caption or path) is not valid UTF-8"
    malformed_row = "malformed_row", (
        "the manifest line cannot be parsed (a broken JSONL line, a CSV row with the wrong "
        "number of fields)")
    deferred = "deferred", (
        "the file is still being written (younger than `settle_s`, or it changed between "
        "hashing and reading); retried on a later run")
    # the file, from its size and probe (nothing decoded yet)
    empty_file = "empty_file", "the file has zero bytes"
    file_too_large = "file_too_large", "the file is bigger than `max_file_bytes`"
    unsupported_container = "unsupported_container", (
        "FFmpeg detects a format that is not a single-file media container (a playlist, "
        "concat list, image sequence, HLS/DASH manifest...): never opened")
    unreadable = "unreadable", (
        "FFmpeg cannot open the file, or its video stream has no usable codec parameters")
    no_video_stream = "no_video_stream", "the file has no video stream (audio only, not media)"
    unknown_rotation = "unknown_rotation", (
        "the display rotation cannot be read, or is not a quarter turn: the upright picture "
        "is unknown")
    probe_timeout = "probe_timeout", (
        "reading the headers took longer than `probe_timeout_s`; its worker was stopped")
    probe_crash = "probe_crash", "the probing process died (e.g. a segfault) on this file"
    too_large = "too_large", "a frame has more pixels than `max_pixels`"
    too_small = "too_small", "the short side is under `min_side` pixels"
    too_long = "too_long", "the clip lasts longer than `max_duration_s`"
    too_short = "too_short", (
        "the clip is shorter than the shortest bucket's window (`short_clips=reject`)")
    # decoding
    truncated = "truncated", "the video data ends before the sampled window does"
    decode_error = "decode_error", "FFmpeg failed while decoding (the message names the frame)"
    decode_timeout = "decode_timeout", (
        "decoding took longer than `decode_timeout_s`; its worker was stopped")
    decode_crash = "decode_crash", "the decoder process died (e.g. a segfault) on this clip"
    # segments of long videos and their quality scores (split_scenes, the min_* thresholds)
    segment_too_short = "segment_too_short", (
        "a scene (or the rest of one cut into windows) is shorter than `min_clip_s`")
    no_caption = "no_caption", (
        "the segment has no caption: its source has none and no `segment_captions` row covers it")
    low_motion = "low_motion", "`motion_score` (optical flow) is under `min_motion`: a static shot"
    too_dark = "too_dark", "`brightness` (mean luma) is under `min_brightness`"
    blurry = "blurry", "`sharpness` (variance of the Laplacian) is under `min_sharpness`"
    low_aesthetic = "low_aesthetic", "`aesthetic_score` (CLIP + MLP head) is under `min_aesthetic`"
    # the caption step (caption_mode, caption_polish)
    caption_failed = "caption_failed", (
        "the captioner (model or endpoint) failed on this clip after its retries; asked again "
        "on the next run")
    degenerate_caption = "degenerate_caption", (
        "a written caption is degenerate: a repetition loop, or only a handful of words")
    non_english = "non_english", (
        "the caption is not in `caption_language` (English by default) and no polishing "
        "translated it")
    caption_too_long = "caption_too_long", (
        "a written caption has more T5 tokens than the model reads (`caption_over_limit=reject`)")

def reasons_table() -> str:
    """The README's table of reasons, as Markdown."""
    rows = [f"| `{reason.value}` | {reason.meaning} |" for reason in RejectReason]
    return "\n".join(["| reason | meaning |", "|---|---|", *rows])
