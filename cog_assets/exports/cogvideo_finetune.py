"""Export for the `finetune/` trainer of THUDM/CogVideo: its latent cache plus its manifests.

Conventions, all from THUDM/CogVideo:

- `finetune/datasets/t2v_dataset.py` and `i2v_dataset.py`, `__getitem__`: the cache lives
  under `args.data_root / "cache"`; a video's latent is
  `video_latent / args.model_name / "x".join(args.train_resolution) / (video.stem +
  ".safetensors")` with key `encoded_video`, `[C, F', h, w]`; a prompt's embedding is
  `prompt_embeddings / (sha256(prompt.encode()).hexdigest() + ".safetensors")` with key
  `prompt_embedding`, `[226, D]`. Either is used as is when the file exists.
- `finetune/models/cogvideox_t2v/lora_trainer.py` (`encode_video`, shared by the I2V and 1.5
  trainers): what it caches is `latent_dist.sample() * vae.config.scaling_factor`, made with
  the VAE in the training dtype. So `encoded_video` is a seeded draw from the stored moments
  times the profile's scaling factor (no other factor for 1.5 either), cast to the profile's
  dtype; the seed of each clip depends only on `seed` and its clip id (`sample_seed`).
- `finetune/datasets/utils.py`: `load_prompts` reads `data_root / caption_column` as
  `line.strip()` per line, empty lines dropped, and the hash is of that stripped line (so it is
  taken of the flattened caption written here); `load_videos` / `load_images` resolve lines
  against the list file's folder. The dataset classes raise unless every listed video (and
  image) `is_file()`, hence `videos/<stem>.mp4` is written: a symlink to the source video when
  `videos_root` is given, else an empty placeholder never read while its cache file exists.
- `finetune/schemas/args.py`: one `--train_resolution FxHxW` per run, with (F-1) % 8 == 0, so
  one `videos_<F>x<H>x<W>.txt` / `prompts_<F>x<H>x<W>.txt` pair is written per bucket (plus
  plain `videos.txt` / `prompts.txt` when there is a single bucket); `--model_name` is the
  name a trainer registered under in `finetune/models/*/lora_trainer.py`
  (`cogvideox-t2v`, `cogvideox-i2v`, `cogvideox1.5-t2v`, `cogvideox1.5-i2v`).
- `finetune/models/cogvideox_i2v/lora_trainer.py` (`compute_loss`): the I2V trainer encodes
  the conditioning *picture* from `--image_column` at every step; no image latent is cached.
  An I2V export therefore needs `images` (clip id -> first-frame picture), copied to
  `images/<stem><suffix>`.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from cog_assets.exports import atomic
from cog_assets.exports.clip_table import write_clip_table
from cog_assets.exports.naming import clip_stems
from cog_assets.exports.refusals import check_clip_tensors, prompt_line
from cog_assets.exports.report import ExportReport
from cog_assets.exports.source import ClipRecord, ShardTensors, read_clips
from cog_assets.keys import caption_sha256
from cog_assets.loader import sample_from_moments
from cog_assets.profiles import ModelProfile


def default_model_name(profile: ModelProfile) -> str:
    """The `--model_name` CogVideo registers for this profile's model family and task."""
    family = "cogvideox1.5" if profile.name.startswith("cogvideox1.5") else "cogvideox"
    return f"{family}-{'i2v' if profile.i2v else 't2v'}"


def sample_seed(seed: int, clip_id: str) -> int:
    """The generator seed of one clip's draw: independent of shard layout and clip order."""
    digest = hashlib.sha256(f"{seed}\0{clip_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def encoded_video(moments: torch.Tensor, profile: ModelProfile, seed: int, clip_id: str,
                  dtype: torch.dtype) -> torch.Tensor:
    """What CogVideo's `encode_video` would cache: a posterior draw times the scaling factor."""
    generator = torch.Generator().manual_seed(sample_seed(seed, clip_id))
    return (sample_from_moments(moments, generator) * profile.scaling_factor).to(dtype)


def _check_clip(clip: ClipRecord, videos_root: Path | None,
                images: Mapping[str, str | Path] | None, profile: ModelProfile) -> None:
    if (clip.num_frames - 1) % 8:
        raise ValueError(f"{clip.where()}: F={clip.num_frames} cannot be a CogVideo "
                         "--train_resolution, which needs (F-1) % 8 == 0 "
                         "(finetune/schemas/args.py)")
    if videos_root is not None and not (videos_root / clip.source_video).is_file():
        raise ValueError(f"{clip.where()}: source video {videos_root / clip.source_video} "
                         "not found")
    if profile.i2v:
        picture = None if images is None else images.get(clip.clip_id)
        if picture is None or not Path(picture).is_file():
            raise ValueError(f"{clip.where()}: CogVideo's I2V trainer encodes the first-frame "
                             "picture at every step; pass images={clip_id: picture path} "
                             f"(got {picture!r})")


def _check_prompts(clips: list[ClipRecord], lines: list[str]) -> None:
    """Two captions that flatten to one line would share one cache file: refuse if they differ."""
    owner: dict[str, ClipRecord] = {}
    for clip, line in zip(clips, lines):
        first = owner.setdefault(line, clip)
        if first.caption_sha256 != clip.caption_sha256:
            raise ValueError(f"{clip.where()} and {first.where()}: different captions flatten to "
                             f"the same prompt line {line[:60]!r}, whose embedding CogVideo "
                             "caches once; make the captions differ on one line")


def export_cogvideo_finetune(dataset_dir: str | Path, out_dir: str | Path, profile: ModelProfile,
                             seed: int = 0, model_name: str | None = None, *,
                             dtype: torch.dtype | None = None,
                             videos_root: str | Path | None = None,
                             images: Mapping[str, str | Path] | None = None) -> ExportReport:
    """Write `out_dir` as a CogVideo `finetune/` `--data_root` whose cache is already full.

    `dtype` defaults to the profile's training dtype (what the trainer's own cache would hold).
    `videos_root` (the pipeline's data root) makes `videos/<stem>.mp4` symlinks to the sources
    instead of empty placeholders. Every clip is checked before anything is written; the
    manifests are written last, each file by atomic rename.
    """
    out = Path(out_dir).resolve()
    model = model_name or default_model_name(profile)
    torch_dtype = dtype or getattr(torch, profile.dtype)
    source_root = None if videos_root is None else Path(videos_root).resolve()
    clips = read_clips(dataset_dir)
    stems = clip_stems(clip.clip_id for clip in clips)
    written: list[Path] = []
    with ShardTensors() as tensors:
        lines = [prompt_line(clip) for clip in clips]
        for clip in clips:
            _check_clip(clip, source_root, images, profile)
            check_clip_tensors(clip, tensors, profile)
        _check_prompts(clips, lines)
        cache = out / "cache"
        embedded: set[str] = set()
        for clip, line in zip(clips, lines):
            stem = stems[clip.clip_id]
            latent = encoded_video(tensors.moments(clip), profile, seed, clip.clip_id, torch_dtype)
            written.append(atomic.write_bytes(
                cache / "video_latent" / model / clip.bucket / f"{stem}.safetensors",
                safetensors_bytes({"encoded_video": latent.contiguous()})))
            if line not in embedded:
                embedded.add(line)
                embedding = tensors.embedding(clip).to(torch_dtype).contiguous()
                written.append(atomic.write_bytes(
                    cache / "prompt_embeddings" / f"{caption_sha256(line)}.safetensors",
                    safetensors_bytes({"prompt_embedding": embedding})))
            video = out / "videos" / f"{stem}.mp4"
            if source_root is None:
                written.append(atomic.write_bytes(video, b""))
            else:
                written.append(atomic.symlink(video, source_root / clip.source_video))
            if profile.i2v:
                assert images is not None  # checked above
                picture = Path(images[clip.clip_id])
                with atomic.atomic_file(out / "images" / f"{stem}{picture.suffix}") as handle:
                    with open(picture, "rb") as source:
                        shutil.copyfileobj(source, handle)
                written.append(out / "images" / f"{stem}{picture.suffix}")
    written.append(write_clip_table(out, clips, stems))
    written_lists, runs = _write_manifests(out, clips, lines, stems, images, profile, model)
    return ExportReport(out_dir=out, clips=len(clips), files=tuple(written + written_lists),
                        trainer_args=runs)


def _write_manifests(out: Path, clips: list[ClipRecord], lines: list[str], stems: dict[str, str],
                     images: Mapping[str, str | Path] | None, profile: ModelProfile, model: str
                     ) -> tuple[list[Path], tuple[tuple[str, ...], ...]]:
    """One manifest set per bucket (one `--train_resolution` each), plain names if only one."""
    by_bucket: dict[str, list[int]] = {}
    for i, clip in enumerate(clips):
        by_bucket.setdefault(clip.bucket, []).append(i)
    written: list[Path] = []
    runs = []
    for bucket, members in sorted(by_bucket.items()):
        suffixes = [f"_{bucket}"] + ([""] if len(by_bucket) == 1 else [])
        for suffix in suffixes:
            if profile.i2v:
                assert images is not None
                written.append(atomic.write_lines(out / f"images{suffix}.txt", [
                    f"images/{stems[clips[i].clip_id]}{Path(images[clips[i].clip_id]).suffix}"
                    for i in members]))
            written.append(atomic.write_lines(out / f"prompts{suffix}.txt",
                                              [lines[i] for i in members]))
            written.append(atomic.write_lines(out / f"videos{suffix}.txt", [
                f"videos/{stems[clips[i].clip_id]}.mp4" for i in members]))
        run = ["--data_root", str(out), "--caption_column", f"prompts_{bucket}.txt",
               "--video_column", f"videos_{bucket}.txt", "--model_name", model,
               "--model_type", "i2v" if profile.i2v else "t2v", "--train_resolution", bucket]
        if profile.i2v:
            run += ["--image_column", f"images_{bucket}.txt"]
        runs.append(tuple(run))
    return written, tuple(runs)
