"""Export for cogvideox-factory's `--load_tensors` training (a-r-r-o-w/cogvideox-factory).

Conventions, all from that repository:

- `training/dataset.py`, `VideoDataset._load_dataset_from_local_path`: `--caption_column` and
  `--video_column` name files in `--data_root`, read as `line.strip()` for each line of
  `readlines()`, empty lines dropped; video paths are `data_root / line`, and with
  `--load_tensors` they need not exist.
- `training/dataset.py`, `_load_preprocessed_latents_and_embeds`: the stem is
  `path.name.split(".")[0]`, and tensors are `path.parent.parent / {video_latents,
  prompt_embeds, image_latents} / <stem>.pt`, read with `torch.load(..., weights_only=True)`.
  So every `videos.txt` line is exactly `videos/<stem>.mp4` (one folder deep).
- `training/prepare_dataset.py` saves `vae._encode(...)` per clip, i.e. the posterior moments
  (mean ‖ logvar) `[2C, F', H/8, W/8]`, unscaled; image latents are the moments of the first
  frame, `[2C, 1, H/8, W/8]`; prompt embeddings are T5 last hidden states `[226, D]`.
- `training/cogvideox_text_to_video_lora.py` (and the I2V script): with `--load_tensors` the
  batch goes through `DiagonalGaussianDistribution(...).sample() * vae.config.scaling_factor`,
  which is why moments are stored unscaled.
- `training/dataset.py`, `__getitem__`: F is derived from the latent frame count F' as
  `4·F'` when F' is even and `4·(F'-1)+1` when odd; `BucketSampler` then indexes its buckets by
  `(F, H, W)` over `--frame_buckets × --height_buckets × --width_buckets` (a missing key is a
  `KeyError` mid-epoch). A clip is therefore exported only if that F equals its real F and F is
  one of `frame_buckets`; H and W come back as `8·h`, `8·w` and are listed in the report's
  trainer arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cog_assets.exports import atomic
from cog_assets.exports.clip_table import write_clip_table
from cog_assets.exports.naming import clip_stems
from cog_assets.exports.refusals import check_clip_tensors, prompt_line
from cog_assets.exports.report import ExportReport
from cog_assets.exports.source import ClipRecord, ShardTensors, read_clips
from cog_assets.profiles import ModelProfile


def trainer_num_frames(latent_frames: int) -> int:
    """F as cogvideox-factory's dataset derives it from the latent frame count."""
    if latent_frames % 2 == 0:
        return latent_frames * 4
    return (latent_frames - 1) * 4 + 1


def _check_frames(clip: ClipRecord, profile: ModelProfile, frame_buckets: Sequence[int]) -> None:
    latent_frames = profile.latent_frames(clip.num_frames)
    read_back = trainer_num_frames(latent_frames)
    if read_back != clip.num_frames:
        raise ValueError(
            f"{clip.where()}: F={clip.num_frames} gives {latent_frames} latent frames, which "
            f"cogvideox-factory reads back as F={read_back} (training/dataset.py); only F with "
            "an odd latent count (F = 8k+1, e.g. 9, 17, 49) round-trips")
    if clip.num_frames not in frame_buckets:
        raise ValueError(f"{clip.where()}: F={clip.num_frames} is not one of the frame buckets "
                         f"{sorted(frame_buckets)}")


def export_cogvideox_factory(dataset_dir: str | Path, out_dir: str | Path, profile: ModelProfile,
                             frame_buckets: Sequence[int] | None = None) -> ExportReport:
    """Write `out_dir` as a cogvideox-factory `--data_root` for `--load_tensors` training.

    Every clip is checked before anything is written, so a refused clip (ValueError naming it)
    leaves `out_dir` as it was. `frame_buckets` defaults to the distinct F values present.
    Tensor files are written first and `videos.txt`/`prompts.txt` last, each by atomic rename.
    """
    out = Path(out_dir).resolve()
    clips = read_clips(dataset_dir)
    buckets = sorted(set(frame_buckets) if frame_buckets is not None
                     else {clip.num_frames for clip in clips})
    stems = clip_stems(clip.clip_id for clip in clips)
    written: list[Path] = []
    with ShardTensors() as tensors:
        prompts = []
        for clip in clips:
            prompts.append(prompt_line(clip))
            _check_frames(clip, profile, buckets)
            check_clip_tensors(clip, tensors, profile)
        for clip in clips:
            stem = stems[clip.clip_id]
            written.append(atomic.save_tensor(out / "video_latents" / f"{stem}.pt",
                                              tensors.moments(clip)))
            written.append(atomic.save_tensor(out / "prompt_embeds" / f"{stem}.pt",
                                              tensors.embedding(clip)))
            if profile.i2v:
                written.append(atomic.save_tensor(out / "image_latents" / f"{stem}.pt",
                                                  tensors.image_latent(clip)))
    written.append(write_clip_table(out, clips, stems))
    written.append(atomic.write_lines(out / "prompts.txt", prompts))
    written.append(atomic.write_lines(out / "videos.txt",
                                      [f"videos/{stems[clip.clip_id]}.mp4" for clip in clips]))
    args = ("--data_root", str(out), "--caption_column", "prompts.txt",
            "--video_column", "videos.txt", "--load_tensors",
            "--frame_buckets", *map(str, buckets),
            "--height_buckets", *map(str, sorted({clip.height for clip in clips})),
            "--width_buckets", *map(str, sorted({clip.width for clip in clips})))
    return ExportReport(out_dir=out, clips=len(clips), files=tuple(written), trainer_args=(args,))
