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
  one of `frame_buckets`; H and W come back as `8·h`, `8·w`. Its defaults
  (`HEIGHT_BUCKETS`, `WIDTH_BUCKETS`, `FRAME_BUCKETS = [16, 24, 32, 48, 64, 80]`) hold none of
  the tiny shapes and not 49 or 81 frames: the exact `--frame_buckets`, `--height_buckets` and
  `--width_buckets` of the export are written to `trainer_args.txt` beside it.
- `training/cogvideox_*_lora.py`, `collate_fn`: tensors are cast to the accelerator's
  `weight_dtype`; `--mixed_precision` is written to match the tensors' dtype.
- `id_token` is applied by the dataset only without `--load_tensors` (`__getitem__`); with
  tensors the prompt embeddings are used as they are, so the token must already be in the
  caption T5 encoded: cog-assets puts it there (the `id_token` setting) and the manifests here
  carry it. `--id_token` is recorded in the arguments (a no-op with `--load_tensors`).
- CogVideoX 1.5 patches latent frames in pairs (`patch_size_t=2`) and these scripts do not pad,
  so a 1.5 export stores an even F' (the first latent frame's moments repeated in front, as
  CogVideo's trainers repeat the first latent frame) and the trainer's F for that F' (`4·F'`)
  as its frame buckets, e.g. 88 for 81-frame clips.
- I2V image latents are sampled and multiplied by the scaling factor by the script
  (`cogvideox_image_to_video_lora.py`). With `image_latent_scaling="inference"` on a VAE with
  `invert_scale_latents` (1.5), the stored image moments are rescaled (mean / s², logvar −
  4·ln s) so that what the script computes, sample × s, is the inference convention's
  sample / s (the same draw, exactly).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from cog_assets.core.choices import ImageLatentScaling
from cog_assets.core.profiles import ModelProfile
from cog_assets.exports import atomic
from cog_assets.exports.clip_table import (
    CAPTIONS_FILE,
    CLIP_TABLE,
    write_captions_file,
    write_clip_table,
)
from cog_assets.exports.naming import clip_stems
from cog_assets.exports.refusals import check_clip_tensors, prompt_line
from cog_assets.exports.report import (
    TRAINER_ARGS_FILE,
    ExportReport,
    mixed_precision,
    trainer_args_text,
)
from cog_assets.exports.source import ClipRecord, ShardTensors, read_clips
from cog_assets.loader import DEFAULT_SCALING, image_latent_factor, pad_latent_frames


def trainer_num_frames(latent_frames: int) -> int:
    """F as cogvideox-factory's dataset derives it from the latent frame count."""
    if latent_frames % 2 == 0:
        return latent_frames * 4
    return (latent_frames - 1) * 4 + 1


def exported_num_frames(clip: ClipRecord, profile: ModelProfile) -> int:
    """The F the trainer will see for this clip's exported (for 1.5: padded) latents."""
    return trainer_num_frames(profile.padded_latent_frames(clip.num_frames))


def _check_frames(clip: ClipRecord, profile: ModelProfile, frame_buckets: Sequence[int]) -> None:
    latent_frames = profile.latent_frames(clip.num_frames)
    read_back = exported_num_frames(clip, profile)
    if profile.temporal_patch == 1 and read_back != clip.num_frames:
        raise ValueError(
            f"{clip.where()}: F={clip.num_frames} gives {latent_frames} latent frames, which "
            f"cogvideox-factory reads back as F={read_back} (training/dataset.py); only F with "
            "an odd latent count (F = 8k+1, e.g. 9, 17, 49) round-trips")
    if read_back not in frame_buckets:
        raise ValueError(f"{clip.where()}: its latents read back as F={read_back}, which is not "
                         f"one of the frame buckets {sorted(frame_buckets)}")


def factory_image_moments(moments: torch.Tensor, profile: ModelProfile,
                          scaling: ImageLatentScaling | str) -> torch.Tensor:
    """Image moments the script's `sample() * scaling_factor` turns into the chosen
    convention's latent: unchanged for `multiply`; for `inference` on an inverted VAE,
    mean / s² and logvar − 4·ln s, so that sample × s is the original sample / s."""
    ratio = image_latent_factor(profile, scaling) / profile.scaling_factor  # 1 or 1/s²
    if ratio == 1.0:
        return moments
    mean, logvar = moments.float().chunk(2, dim=0)
    return torch.cat([mean * ratio, logvar + 2 * math.log(ratio)]).to(moments.dtype)


def _tensor_dtype(clips: list[ClipRecord], tensors: ShardTensors) -> torch.dtype:
    """The one dtype the exported latents have (a dataset made in two dtypes is refused)."""
    first: dict[torch.dtype, ClipRecord] = {}
    for clip in clips:
        first.setdefault(tensors.moments_dtype(clip), clip)
    if len(first) > 1:
        (a, ca), (b, cb) = list(first.items())[:2]
        raise ValueError(f"{ca.where()} has {a} latents and {cb.where()} {b}: the dataset was "
                         "made in two dtypes; re-run its shards with one --dtype")
    return next(iter(first), torch.float32)


def export_cogvideox_factory(dataset_dir: str | Path, out_dir: str | Path, profile: ModelProfile,
                             frame_buckets: Sequence[int] | None = None, *,
                             image_latent_scaling: ImageLatentScaling | str = DEFAULT_SCALING,
                             id_token: str | None = None) -> ExportReport:
    """Write `out_dir` as a cogvideox-factory `--data_root` for `--load_tensors` training.

    Every clip is checked before anything is written, so a refused clip (ValueError naming it)
    leaves `out_dir` as it was. The export is written to a fresh folder that then replaces
    `out_dir` whole (a link to the current version). `frame_buckets` defaults to the distinct
    F the trainer will read back. `id_token` (already in the captions) is recorded in the
    trainer arguments.
    """
    out = Path(os.path.abspath(out_dir))
    clips = read_clips(dataset_dir)
    buckets = sorted(set(frame_buckets) if frame_buckets is not None
                     else {exported_num_frames(clip, profile) for clip in clips})
    stems = clip_stems(clip.clip_id for clip in clips)
    relative: list[str] = []
    with ShardTensors() as tensors:
        prompts = []
        for clip in clips:
            prompts.append(prompt_line(clip))
            _check_frames(clip, profile, buckets)
            check_clip_tensors(clip, tensors, profile)
        dtype = _tensor_dtype(clips, tensors)
        runs, notes = _trainer_args(out, clips, buckets, profile, dtype, image_latent_scaling,
                                    id_token)
        with atomic.fresh_folder(out) as folder:
            for clip in clips:
                stem = stems[clip.clip_id]
                moments = pad_latent_frames(tensors.moments(clip), profile.temporal_patch)
                atomic.save_tensor(folder / "video_latents" / f"{stem}.pt", moments)
                atomic.save_tensor(folder / "prompt_embeds" / f"{stem}.pt",
                                   tensors.embedding(clip))
                relative += [f"video_latents/{stem}.pt", f"prompt_embeds/{stem}.pt"]
                if profile.i2v:
                    image = factory_image_moments(tensors.image_latent(clip), profile,
                                                  image_latent_scaling)
                    atomic.save_tensor(folder / "image_latents" / f"{stem}.pt", image)
                    relative.append(f"image_latents/{stem}.pt")
            write_clip_table(folder, clips, stems)
            write_captions_file(folder, clips, stems)
            atomic.write_lines(folder / "prompts.txt", prompts)
            atomic.write_lines(folder / "videos.txt",
                               [f"videos/{stems[clip.clip_id]}.mp4" for clip in clips])
            atomic.write_bytes(folder / TRAINER_ARGS_FILE,
                               trainer_args_text(runs, notes).encode("utf-8"))
            relative += [CLIP_TABLE, CAPTIONS_FILE, "prompts.txt", "videos.txt",
                         TRAINER_ARGS_FILE]
    return ExportReport(out_dir=out, clips=len(clips), files=tuple(out / r for r in relative),
                        trainer_args=runs, notes=notes, args_file=out / TRAINER_ARGS_FILE)


def _trainer_args(out: Path, clips: list[ClipRecord], buckets: list[int],
                  profile: ModelProfile, dtype: torch.dtype,
                  scaling: ImageLatentScaling | str, id_token: str | None
                  ) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    script = ("cogvideox_image_to_video_lora.py" if profile.i2v
              else "cogvideox_text_to_video_lora.py")
    args = ["--data_root", str(out), "--caption_column", "prompts.txt",
            "--video_column", "videos.txt", "--load_tensors",
            "--frame_buckets", *map(str, buckets),
            "--height_buckets", *map(str, sorted({clip.height for clip in clips})),
            "--width_buckets", *map(str, sorted({clip.width for clip in clips})),
            "--mixed_precision", mixed_precision(dtype)]
    if id_token:
        args += ["--id_token", id_token]
    notes = [f"cogvideox-factory --load_tensors export of {len(clips)} clips ({profile.name}); "
             f"pass these to training/{script} (plus your model and training arguments)",
             f"tensors are {str(dtype).removeprefix('torch.')}: --mixed_precision "
             f"{mixed_precision(dtype)}"]
    if profile.temporal_patch > 1:
        notes.append("latent frames padded to even (first latent frame repeated) for "
                     f"patch_size_t={profile.temporal_patch}; the trainer reads F = 4*F' back, "
                     f"hence --frame_buckets {' '.join(map(str, buckets))}")
    if id_token:
        notes.append(f"id token {id_token!r} begins every prompt and its T5 embedding; begin "
                     "--validation_prompt with it too")
    if profile.i2v:
        notes.append(f"image latents for image_latent_scaling={ImageLatentScaling(scaling)} "
                     f"(x{image_latent_factor(profile, scaling):.6g} after sampling)")
        if profile.family == "cogvideox1.5":
            notes.append("the CogVideoX 1.5 I2V transformer needs `ofs` (CogVideo finetune/ "
                         "passes 2.0), which training/cogvideox_image_to_video_lora.py does not "
                         "pass: use a trainer that does")
    return (tuple(args),), tuple(notes)
