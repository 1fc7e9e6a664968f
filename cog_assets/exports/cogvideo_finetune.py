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
  times the scaling factor of the VAE that made them, as its shard records it (no other factor
  for 1.5 either), cast to the profile's
  dtype; the seed of each clip depends only on `seed` and its clip id (`sample_seed`).
- `finetune/datasets/utils.py`: `load_prompts` reads `data_root / caption_column` as
  `line.strip()` per line, empty lines dropped, and the hash is of that stripped line (so it is
  taken of the flattened caption written here); `load_videos` / `load_images` resolve lines
  against the list file's folder. The dataset classes raise unless every listed video (and
  image) `is_file()`, hence `videos/<stem>.mp4` is written: a hard link to the clip's own clip
  file (its segment only, upright, H.264 MP4: what the trainer decodes when a cache file is
  missing, e.g. for another `--train_resolution`) when `clip_files` are given, else an empty
  placeholder never read while its cache file exists. A hard link is a real file: the export
  can be moved or copied to the training machine, and in the store it takes no space twice.
- `finetune/schemas/args.py`: one `--train_resolution FxHxW` per run, with (F-1) % 8 == 0, so
  one `videos_<F>x<H>x<W>.txt` / `prompts_<F>x<H>x<W>.txt` pair is written per bucket (plus
  plain `videos.txt` / `prompts.txt` when there is a single bucket); `--model_name` is the
  name a trainer registered under in `finetune/models/*/lora_trainer.py`
  (`cogvideox-t2v`, `cogvideox-i2v`, `cogvideox1.5-t2v`, `cogvideox1.5-i2v`).
- `finetune/models/cogvideox_i2v/lora_trainer.py` (`compute_loss`): the I2V trainer encodes
  the conditioning *picture* from `--image_column` at every step and multiplies its latent by
  the scaling factor (also for 1.5, whatever `image_latent_scaling` says); no image latent is
  cached. An I2V export therefore copies each clip's first-frame picture (the PNG the shard
  holds, or `images`) to `images/<stem><suffix>`.
- `compute_loss` of every trainer: with `patch_size_t` (1.5) the trainer itself prepends
  copies of the first latent frame, so `encoded_video` keeps the clip's own F'.
- `finetune/trainer.py` (`__move_components_to_device`) casts every component, T5 included,
  whole to the training dtype, so CogVideo's own cache holds embeddings of a T5 whose `wo`
  layers ran in bf16/fp16. The embeddings exported here come from T5 as transformers loads it
  (`wo` kept in fp32, as diffusers' pipelines and cogvideox-factory's prepare_dataset.py
  run it); `bench/bench_t5_precision.py` measures the difference.
- `finetune/schemas/args.py`: `--mixed_precision` defaults to `no` (an fp32 transformer, which
  fails on bf16/fp16 tensors); the arguments written beside the export set it to the dtype of
  the cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from cog_assets.core.choices import ImageLatentScaling
from cog_assets.core.keys import caption_sha256
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
from cog_assets.loader import DEFAULT_SCALING, image_latent_factor, sample_from_moments
from cog_assets.store.clip_files import StoredClip


def default_model_name(profile: ModelProfile) -> str:
    """The `--model_name` CogVideo registers for this profile's model family and task."""
    return f"{profile.family}-{'i2v' if profile.i2v else 't2v'}"


def sample_seed(seed: int, clip_id: str) -> int:
    """The generator seed of one clip's draw: independent of shard layout and clip order."""
    digest = hashlib.sha256(f"{seed}\0{clip_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def encoded_video(moments: torch.Tensor, scaling_factor: float, seed: int, clip_id: str,
                  dtype: torch.dtype) -> torch.Tensor:
    """What CogVideo's `encode_video` would cache: a posterior draw times the scaling factor
    of the VAE that made the moments (`vae.config.scaling_factor` there)."""
    generator = torch.Generator().manual_seed(sample_seed(seed, clip_id))
    return (sample_from_moments(moments, generator) * scaling_factor).to(dtype)


def _pictures(clips: list[ClipRecord], images: Mapping[str, str | Path] | None,
              profile: ModelProfile) -> dict[str, Path | None]:
    """Each clip's first-frame picture: `images` where given, else the shard's own PNG."""
    if not profile.i2v:
        return {}
    given = dict(images or {})
    return {clip.clip_id: (Path(given[clip.clip_id]) if clip.clip_id in given
                           else clip.first_frame_png) for clip in clips}


def _check_clip(clip: ClipRecord, clip_files: Mapping[str, StoredClip] | None,
                images: Mapping[str, Path | None], profile: ModelProfile) -> None:
    if (clip.num_frames - 1) % 8:
        raise ValueError(f"{clip.where()}: F={clip.num_frames} cannot be a CogVideo "
                         "--train_resolution, which needs (F-1) % 8 == 0 "
                         "(finetune/schemas/args.py)")
    if clip_files is not None and (clip.clip_id not in clip_files
                                   or not clip_files[clip.clip_id].path.is_file()):
        raise ValueError(f"{clip.where()}: no clip file was cut for this clip")
    if profile.i2v:
        picture = images.get(clip.clip_id)
        if picture is None or not Path(picture).is_file():
            raise ValueError(f"{clip.where()}: CogVideo's I2V trainer encodes the first-frame "
                             "picture at every step, and the shard holds none for this clip; "
                             f"pass images={{clip_id: picture path}} (got {picture!r})")


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
                             clip_files: Mapping[str, StoredClip] | None = None,
                             images: Mapping[str, str | Path] | None = None,
                             image_latent_scaling: ImageLatentScaling | str = DEFAULT_SCALING,
                             id_token: str | None = None) -> ExportReport:
    """Write `out_dir` as a CogVideo `finetune/` `--data_root` whose cache is already full.

    `dtype` defaults to the profile's training dtype (what the trainer's own cache would hold).
    `clip_files` (clip id -> its clip file, `stages.clip_files`) makes `videos/<stem>.mp4`
    hard links to the clips cut out of their sources instead of empty placeholders. I2V
    pictures are the shards' first-frame PNGs unless `images` names others. Every clip is checked before anything is written; the export is
    written to a fresh folder that then replaces `out_dir` whole.
    """
    out = Path(os.path.abspath(out_dir))
    model = model_name or default_model_name(profile)
    torch_dtype = dtype or getattr(torch, profile.dtype)
    clips = read_clips(dataset_dir)
    stems = clip_stems(clip.clip_id for clip in clips)
    pictures = _pictures(clips, images, profile)
    relative: list[str] = []
    with ShardTensors() as tensors:
        lines = [prompt_line(clip) for clip in clips]
        for clip in clips:
            _check_clip(clip, clip_files, pictures, profile)
            check_clip_tensors(clip, tensors, profile)
        _check_prompts(clips, lines)
        runs = _runs(out, clips, profile, model, torch_dtype)
        notes = _notes(clips, profile, torch_dtype, image_latent_scaling, id_token)
        with atomic.fresh_folder(out) as folder:
            embedded: set[str] = set()
            for clip, line in zip(clips, lines):
                stem = stems[clip.clip_id]
                latent = encoded_video(tensors.moments(clip),
                                       clip.vae_scaling(profile).scaling_factor, seed,
                                       clip.clip_id, torch_dtype)
                name = f"cache/video_latent/{model}/{clip.bucket}/{stem}.safetensors"
                atomic.write_bytes(folder / name,
                                   safetensors_bytes({"encoded_video": latent.contiguous()}))
                relative.append(name)
                if line not in embedded:
                    embedded.add(line)
                    embedding = tensors.embedding(clip).to(torch_dtype).contiguous()
                    name = f"cache/prompt_embeddings/{caption_sha256(line)}.safetensors"
                    atomic.write_bytes(folder / name,
                                       safetensors_bytes({"prompt_embedding": embedding}))
                    relative.append(name)
                video = folder / "videos" / f"{stem}.mp4"
                if clip_files is None:
                    atomic.write_bytes(video, b"")
                else:
                    atomic.link_or_copy(video, clip_files[clip.clip_id].path)
                relative.append(f"videos/{stem}.mp4")
                if profile.i2v:
                    picture = Path(pictures[clip.clip_id])
                    name = f"images/{stem}{picture.suffix}"
                    atomic.copy_file(folder / name, picture)
                    relative.append(name)
            relative += _write_manifests(folder, clips, lines, stems, pictures, profile)
            write_clip_table(folder, clips, stems, None if clip_files is None else {
                clip_id: clip.key for clip_id, clip in clip_files.items()})
            write_captions_file(folder, clips, stems)
            relative += [CLIP_TABLE, CAPTIONS_FILE]
            atomic.write_bytes(folder / TRAINER_ARGS_FILE,
                               trainer_args_text(runs, notes).encode("utf-8"))
            relative.append(TRAINER_ARGS_FILE)
    return ExportReport(out_dir=out, clips=len(clips), files=tuple(out / r for r in relative),
                        trainer_args=runs, notes=notes, args_file=out / TRAINER_ARGS_FILE)


def _by_bucket(clips: list[ClipRecord]) -> dict[str, list[int]]:
    by_bucket: dict[str, list[int]] = {}
    for i, clip in enumerate(clips):
        by_bucket.setdefault(clip.bucket, []).append(i)
    return dict(sorted(by_bucket.items()))


def _write_manifests(folder: Path, clips: list[ClipRecord], lines: list[str],
                     stems: dict[str, str], pictures: Mapping[str, Path | None],
                     profile: ModelProfile) -> list[str]:
    """One manifest set per bucket (one `--train_resolution` each), plain names if only one."""
    by_bucket = _by_bucket(clips)
    written: list[str] = []
    for bucket, members in by_bucket.items():
        for suffix in [f"_{bucket}"] + ([""] if len(by_bucket) == 1 else []):
            if profile.i2v:
                atomic.write_lines(folder / f"images{suffix}.txt", [
                    f"images/{stems[clips[i].clip_id]}{Path(pictures[clips[i].clip_id]).suffix}"
                    for i in members])
                written.append(f"images{suffix}.txt")
            atomic.write_lines(folder / f"prompts{suffix}.txt", [lines[i] for i in members])
            atomic.write_lines(folder / f"videos{suffix}.txt", [
                f"videos/{stems[clips[i].clip_id]}.mp4" for i in members])
            written += [f"prompts{suffix}.txt", f"videos{suffix}.txt"]
    return written


def _runs(out: Path, clips: list[ClipRecord], profile: ModelProfile, model: str,
          dtype: torch.dtype) -> tuple[tuple[str, ...], ...]:
    runs = []
    for bucket in _by_bucket(clips):
        run = ["--data_root", str(out), "--caption_column", f"prompts_{bucket}.txt",
               "--video_column", f"videos_{bucket}.txt", "--model_name", model,
               "--model_type", "i2v" if profile.i2v else "t2v", "--train_resolution", bucket,
               "--mixed_precision", mixed_precision(dtype)]
        if profile.i2v:
            run += ["--image_column", f"images_{bucket}.txt"]
        runs.append(tuple(run))
    return tuple(runs)


def _notes(clips: list[ClipRecord], profile: ModelProfile, dtype: torch.dtype,
           scaling: ImageLatentScaling | str, id_token: str | None) -> tuple[str, ...]:
    notes = [f"CogVideo finetune/ data root with its cache filled: {len(clips)} clips "
             f"({profile.name}), one train.py run per --train_resolution below (plus your "
             "--model_path, --training_type and training arguments)",
             f"cache tensors are {str(dtype).removeprefix('torch.')}: --mixed_precision "
             f"{mixed_precision(dtype)}",
             "prompt embeddings come from T5 with its wo layers in fp32 (as transformers loads "
             "it); CogVideo's own cache would cast T5 whole to the training dtype"]
    if id_token:
        notes.append(f"id token {id_token!r} begins every prompt and its T5 embedding; begin "
                     "--validation_prompts with it too")
    if profile.i2v and image_latent_factor(profile, scaling) != profile.scaling_factor:
        notes.append("image_latent_scaling=inference cannot apply here: CogVideo's I2V trainer "
                     "encodes the picture itself and multiplies its latent by the scaling "
                     "factor (finetune/models/cogvideox_i2v/lora_trainer.py)")
    return tuple(notes)
