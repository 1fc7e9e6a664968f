"""Export for CogVideoX-Fun and the other VideoX-Fun trainers (aigc-apps/VideoX-Fun): the
curated clips as video files plus the JSON list their dataset reads.

Conventions, all from that repository:

- `videox_fun/data/dataset_image_video.py`, `ImageVideoDataset`: `--train_data_meta` is a JSON
  list (`json.load(open(path))`, so the file is written as ASCII JSON, whatever the trainer's
  locale) of `{"file_path", "text", "type": "video"}`; `file_path` is joined to
  `--train_data_dir` (`os.path.join(data_root, file_path)`); other keys are ignored. Each video
  is read with decord's `VideoReader`, frames by index: `batch_index = np.linspace(start_idx,
  start_idx + clip_length - 1, n, dtype=int)` with `clip_length = (n - 1) * stride + 1`, so the
  files must hold exactly the curated segment at a constant frame rate (a stride is a number of
  frames) and be upright (decord ignores a display matrix). Hence the clip files
  (`stages.clip_files`), linked as `train/<stem>.mp4`.
- `scripts/cogvideox_fun/train.py`: `AspectRatioBatchImageVideoSampler` takes `width` and
  `height` from an entry when present (else it opens the video), so every entry carries its
  clip file's size. With `--training_with_video_token_length` a batch's budget is
  `video_sample_n_frames * token_sample_size**2` pixel-frames (13312 tokens for 512 at 49
  frames, 29952 for 768, 53248 for 1024): the arguments written here set `token_sample_size`
  (and `video_sample_size`, `image_sample_size`) to the side of the square whose area is the
  dataset's largest bucket, `video_sample_n_frames` to its frame count, and
  `video_sample_stride` to the clips' frame rate over the profile's.
- `--train_mode inpaint` (the InP models; image-to-video profiles) builds start/end masks from
  the decoded frames itself; `--export-keyframes` adds each clip's first and last frame as PNGs
  for trainers that condition on given start and end images.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping
from pathlib import Path

import torch

from cog_assets.core.clip_row import SCORE_COLUMNS
from cog_assets.core.profiles import ModelProfile
from cog_assets.exports import atomic
from cog_assets.exports.clip_table import (
    CAPTIONS_FILE,
    CLIP_TABLE,
    write_captions_file,
    write_clip_table,
)
from cog_assets.exports.naming import clip_stems
from cog_assets.exports.report import (
    TRAINER_ARGS_FILE,
    ExportReport,
    mixed_precision,
    trainer_args_text,
)
from cog_assets.exports.source import ClipRecord, read_clips
from cog_assets.store.clip_files import StoredClip

METADATA_FILE = "metadata.json"
VIDEOS_DIR = "train"
KEYFRAMES_DIR = "keyframes"
SIDE_STEP = 16  # VAE stride 8 x transformer patch 2: sample sizes in whole patches
# VideoX-Fun's released token budgets at 49 frames: sample side -> video tokens
TOKEN_BUDGETS = {512: 13312, 768: 29952, 1024: 53248}


def sample_size(clips: list[ClipRecord]) -> int:
    """The side of the square with the area of the dataset's largest bucket, in whole patches:
    VideoX-Fun's `token_sample_size` (and sample sizes) for the resolution the profile trains
    at (480x720 -> 592, 768x1360 -> 1024)."""
    area = max(clip.height * clip.width for clip in clips)
    return max(SIDE_STEP, round(math.sqrt(area) / SIDE_STEP) * SIDE_STEP)


def sample_stride(files: list[StoredClip], profile: ModelProfile) -> int:
    """Source frames between sampled frames, so a sample runs at about the profile's rate
    (3 for 24 fps clips and an 8 fps model); the median clip's rate decides."""
    fps = statistics.median(clip.fps for clip in files)
    return max(1, round(fps / profile.fps))


def video_tokens(num_frames: int, side: int) -> int:
    """VideoX-Fun's token count of `num_frames` at side x side: F' x (side/16)^2."""
    return ((num_frames - 1) // 4 + 1) * (side // SIDE_STEP) ** 2


def _entry(clip: ClipRecord, stem: str, file: StoredClip, keyframes: bool) -> dict:
    extra = dict(clip.extra)
    entry = {"file_path": f"{VIDEOS_DIR}/{stem}.mp4", "text": clip.caption, "type": "video",
             "width": file.width, "height": file.height, "clip_id": clip.clip_id,
             "source_video": clip.source_video, "start_s": extra.get("start_s"),
             "end_s": extra.get("end_s"), "fps": round(file.fps, 6), "num_frames": file.frames,
             "caption_source": extra.get("caption_source"),
             **{column: extra.get(column) for column in SCORE_COLUMNS}}
    if keyframes:
        entry["first_frame"] = f"{KEYFRAMES_DIR}/{stem}_first.png"
        entry["last_frame"] = f"{KEYFRAMES_DIR}/{stem}_last.png"
    return entry


def _check(clip: ClipRecord, clip_files: Mapping[str, StoredClip], keyframes: bool) -> None:
    file = clip_files.get(clip.clip_id)
    if file is None or not file.path.is_file():
        raise ValueError(f"{clip.where()}: no clip file was cut for this clip")
    if keyframes and not all(file.picture(w).is_file() for w in ("first", "last")):
        raise ValueError(f"{clip.where()}: its clip file has no first/last frame pictures; "
                         "cut it with export_keyframes")
    if not clip.caption.strip():
        raise ValueError(f"{clip.where()}: its caption is empty")


def export_videox_fun(dataset_dir: str | Path, out_dir: str | Path, profile: ModelProfile,
                      clip_files: Mapping[str, StoredClip], *, keyframes: bool = False,
                      dtype: torch.dtype | None = None, id_token: str | None = None
                      ) -> ExportReport:
    """Write `out_dir` as a VideoX-Fun `--train_data_dir`: `metadata.json` (its
    `--train_data_meta`), one clip file per accepted clip under `train/` (hard links to the
    store's clip files: real files, no space taken twice), with `keyframes` the first and
    last frame of each under `keyframes/`, `clips.parquet`, `captions.jsonl` and
    `trainer_args.txt`.

    `clip_files`: clip id -> its clip file (`stages.clip_files`). `dtype`: what the model
    trains in (`--mixed_precision`; default the profile's). Every clip is checked before
    anything is written; the export is written to a fresh folder that then replaces `out_dir`
    whole."""
    out = Path(os.path.abspath(out_dir))
    torch_dtype = dtype or getattr(torch, profile.dtype)
    clips = read_clips(dataset_dir)
    for clip in clips:
        _check(clip, clip_files, keyframes)
    stems = clip_stems(clip.clip_id for clip in clips)
    files = [clip_files[clip.clip_id] for clip in clips]
    runs, notes = _arguments(out, clips, files, profile, torch_dtype, id_token)
    relative: list[str] = []
    with atomic.fresh_folder(out) as folder:
        entries = []
        for clip, file in zip(clips, files):
            stem = stems[clip.clip_id]
            entry = _entry(clip, stem, file, keyframes)
            atomic.link_or_copy(folder / entry["file_path"], file.path)
            relative.append(entry["file_path"])
            if keyframes:
                for which in ("first", "last"):
                    name = entry[f"{which}_frame"]
                    atomic.link_or_copy(folder / name, file.picture(which))
                    relative.append(name)
            entries.append(entry)
        atomic.write_bytes(folder / METADATA_FILE,
                           json.dumps(entries, indent=1, ensure_ascii=True).encode("ascii"))
        relative.append(METADATA_FILE)
        write_clip_table(folder, clips, stems,
                         {clip.clip_id: file.key for clip, file in zip(clips, files)})
        write_captions_file(folder, clips, stems)
        relative += [CLIP_TABLE, CAPTIONS_FILE]
        atomic.write_bytes(folder / TRAINER_ARGS_FILE,
                           trainer_args_text(runs, notes).encode("utf-8"))
        relative.append(TRAINER_ARGS_FILE)
    return ExportReport(out_dir=out, clips=len(clips), files=tuple(out / r for r in relative),
                        trainer_args=runs, notes=notes, args_file=out / TRAINER_ARGS_FILE)


def _arguments(out: Path, clips: list[ClipRecord], files: list[StoredClip],
               profile: ModelProfile, dtype: torch.dtype, id_token: str | None
               ) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    if not clips:
        notes = (f"VideoX-Fun export of 0 clips ({profile.name}): nothing to train on",)
        return (), notes
    side = sample_size(clips)
    frames = max(clip.num_frames for clip in clips)
    stride = sample_stride(files, profile)
    mode = "inpaint" if profile.i2v else "normal"
    args = ("--train_data_dir", str(out), "--train_data_meta", str(out / METADATA_FILE),
            "--video_sample_size", str(side), "--image_sample_size", str(side),
            "--token_sample_size", str(side), "--video_sample_n_frames", str(frames),
            "--video_sample_stride", str(stride), "--enable_bucket",
            "--training_with_video_token_length", "--train_mode", mode,
            "--mixed_precision", mixed_precision(dtype))
    tokens = video_tokens(frames, side)
    rates = sorted({f"{clip.fps:g}" for clip in files}, key=float)
    nearest = min(TOKEN_BUDGETS, key=lambda s: abs(TOKEN_BUDGETS[s] - tokens))
    notes = [f"VideoX-Fun export of {len(clips)} clips ({profile.name}); pass these to "
             "scripts/cogvideox_fun/train.py or train_lora.py (plus --pretrained_model_name_"
             "or_path and your training arguments)",
             f"token_sample_size {side}: the area of the largest bucket "
             f"({max(clips, key=lambda c: c.height * c.width).bucket}) as a square, "
             f"{tokens} video tokens at {frames} frames (VideoX-Fun's released budgets: "
             f"13312 = 512, 29952 = 768, 53248 = 1024 at 49 frames; nearest: {nearest})",
             f"clips run at {', '.join(rates)} fps: --video_sample_stride {stride} samples "
             f"about {profile.fps} fps, the profile's rate",
             f"--train_mode {mode}: " + ("start/end masks built from the frames (InP models)"
                                         if mode == "inpaint" else "text to video")]
    if id_token:
        notes.append(f"id token {id_token!r} begins every text; begin --validation_prompts "
                     "with it too")
    return (args,), tuple(notes)
