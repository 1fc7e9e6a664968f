"""The fixed vocabularies of cog-assets: the policies a user picks and the statuses of work.

Each is a string enumeration, so a value compares equal to its word ("cover" ==
ResizeMode.cover), serialises as that word (JSON, parquet, artefact keys) and shows as that
word in the CLI, the environment and the Dagster launchpad.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A str enumeration whose str() and format() are its value (as enum.StrEnum on 3.11+)."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str(self), spec)

    @classmethod
    def words(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


class StartPolicy(Choice):
    """Where a clip's sampling window starts."""

    start = "start"
    centre = "centre"
    random = "random"  # seeded

    @classmethod
    def _missing_(cls, value: object) -> "StartPolicy | None":
        return cls.centre if value == "center" else None


class ShortClipPolicy(Choice):
    """What happens to a clip shorter than its window at the profile's fps."""

    reject = "reject"  # rejected as too_short
    stride = "stride"  # the window is spread over the whole clip (cogvideox-factory)
    pad = "pad"  # sampled at fps, the last frame repeated (CogVideo)


class ResizeMode(Choice):
    """How a frame is fitted to its bucket's size."""

    cover = "cover"  # keep aspect, scale to fill, centre crop
    stretch = "stretch"  # scale to the exact size, aspect ignored
    crop = "crop"  # centre crop at the source resolution (scaled up only when smaller)


class SceneDetectorKind(Choice):
    """Which PySceneDetect detector cuts a source video into scenes."""

    adaptive = "adaptive"  # AdaptiveDetector: a cut stands out from its neighbours (steady under camera motion)
    content = "content"  # ContentDetector: a fixed threshold on the frame-to-frame HSV change


class CaptionSource(Choice):
    """Where a clip's caption came from."""

    manifest = "manifest"  # the clip is a whole manifest row: its own caption
    inherited = "inherited"  # a segment of a source video: the source's caption
    segment_table = "segment_table"  # a segment: its row of the segment-caption table
    generated = "generated"  # written for this clip by a captioner (a VLM) from its frames
    polished = "polished"  # any of the above, rewritten by an LLM (caption_polish)


class CaptionMode(Choice):
    """Which clips the caption step captions (the rest keep the caption they came with)."""

    manifest = "manifest"  # none: every clip keeps its manifest / inherited / table caption
    fill = "fill"  # those with none (an empty caption, a segment with no table row)
    segments = "segments"  # fill, and every segment of a source cut into two or more
    replace = "replace"  # every clip


class CaptionOverLimit(Choice):
    """What happens to a written caption longer than T5 reads (226 tokens)."""

    flag = "flag"  # kept and flagged (caption_truncated, with its token count)
    reject = "reject"  # rejected as caption_too_long
    polish = "polish"  # rewritten by the polishing LLM to fit (needs caption_endpoint)


class Dtype(Choice):
    """The dtype the VAE and T5 run in; `auto` is bf16 on a GPU and fp32 on a CPU."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class ImageLatentScaling(Choice):
    """How I2V image latents are scaled for training (they differ only where the VAE has
    `invert_scale_latents`, i.e. CogVideoX 1.5); see the README's "Image-latent scaling"."""

    inference = "inference"  # as diffusers' I2V pipeline conditions: divide where inverted
    multiply = "multiply"  # legacy: always multiply (cogvideox-factory, CogVideo finetune/)


class FramesRetention(Choice):
    """How long frame tensors stay in the store: they are a cache the latents are made from."""

    keep = "keep"  # kept (an archive): a run decodes missing frames even when its latents exist
    until_published = "until_published"  # dropped once the shard's dataset is published
    none = "none"  # dropped as soon as their latents are written


class Executor(Choice):
    """Which Dagster executor runs the steps of a run."""

    in_process = "in_process"  # every step in the run's process: models load once per run
    multiprocess = "multiprocess"  # a process per step
    celery = "celery"  # dagster-celery: each step a Celery task (docs/distributed.md)
    k8s = "k8s"  # dagster-k8s: each step a Kubernetes Job (docs/kubernetes.md)


class Status(Choice):
    """What a step did with one item."""

    computed = "computed"
    reused = "reused"
    rejected = "rejected"


class ArtifactKind(Choice):
    """The kinds of content-addressed artefacts (the folder under cas/)."""

    frames = "frames"  # uint8 [F, H, W, 3] (+ I2V first_frame [H, W, 3])
    first_frame = "first_frame"  # the I2V first frame as a PNG, keyed by its frames key
    latents = "vae_moments"  # VAE posterior moments [2C, F', h, w] (+ I2V image_moments)
    embeddings = "t5_embedding"  # T5 last hidden state [L, D]
    scene_scan = "scene_scan"  # one source video's cut times and per-sample quality scores
    thumbnail = "thumbnail"  # the middle frame as a small PNG, keyed by its frames key
    caption = "caption"  # a caption a model wrote (UTF-8 bytes), keyed by what it saw and how
    clip_file = "clip_file"  # one accepted clip cut out of its source as an H.264 MP4 (+ .json)


class CutMethod(Choice):
    """How a clip file was cut out of its source."""

    stream_copy = "stream_copy"  # the source's H.264 packets copied: the cut is on keyframes
    re_encode = "re_encode"  # decoded, made upright, square-pixelled and CFR, encoded again


class VaeCompile(Choice):
    """Whether the VAE step compiles the VAE's encoder with torch.compile (inductor)."""

    off = "off"
    auto = "auto"  # only where the clips to encode pay back the compilation (measured)
    on = "on"
