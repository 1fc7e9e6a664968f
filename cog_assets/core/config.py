"""Every setting of cog-assets, once: its name, type, default, meaning and validation.

Settings are grouped by concern, one pydantic model per group. Everything else is derived
from these models, so adding a setting is one edit here:

- the environment variable `COG_ASSETS_<NAME>` (what `dagster dev` and workers read),
- the CLI flag `--<name>` (`cog-assets backfill --help` lists them by group),
- the Dagster resource of each group (`cog_assets.defs.resources`: what the launchpad shows),
- the README's table of variables (`settings_table()`; a test keeps the two in step).

A CLI flag beats an environment variable, which beats the default. An invalid value is
refused before any work with a `SettingsError` naming the setting, where it came from, and
what is valid.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Optional, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from cog_assets.core.buckets import Bucket, choose_buckets
from cog_assets.core.choices import (
    CaptionMode,
    CaptionOverLimit,
    Choice,
    Dtype,
    Executor,
    FramesRetention,
    ImageLatentScaling,
    ResizeMode,
    SceneDetectorKind,
    ShortClipPolicy,
    StartPolicy,
    VaeCompile,
)
from cog_assets.core.profiles import PROFILES, ProfileError, get_profile

ENV_PREFIX = "COG_ASSETS_"
DEMO_DIR = Path("cog-assets-demo")


class SettingsError(ValueError):
    """A setting has a value cog-assets cannot run with; nothing has been done yet."""


def setting(default: Any, doc: str, *, flag: str | None = None, **constraints: Any) -> Any:
    """A field with its documentation; `flag` names it for the CLI and environment when the
    field's own name would read badly there (`--shards`, not `--shard-count`)."""
    return Field(default, description=doc, json_schema_extra={"flag": flag} if flag else None,
                 **constraints)


def _absolute(path_or_url: str) -> str:
    """Local paths are made absolute so runs in other working directories agree; URLs stay."""
    if "://" in path_or_url:
        return path_or_url
    return str(Path(path_or_url).expanduser().absolute())


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceSettings(_Group):
    """Where the raw videos and captions are, and how they are cut into shards."""

    data_root: str = setting(str(DEMO_DIR / "data"), "directory with the manifests and videos",
                             validate_default=True)
    shard_count: int = setting(4, "shard count of the dataset", flag="shards", ge=1)
    caption_column: Optional[str] = setting(
        None, "caption column of table manifests (default: caption, prompt or text)")
    video_column: Optional[str] = setting(
        None, "video column of table manifests (default: video, video_path, path or file_name)")
    image_column: Optional[str] = setting(
        None, "I2V first-frame image column of table manifests (default: none)")
    segment_captions: Optional[str] = setting(
        None, "table of captions for segments of long videos, relative to the data root "
        "(.jsonl, .csv or .parquet with video, start_s, end_s and caption columns); not a "
        "manifest")
    id_token: Optional[str] = setting(
        None, "trigger word put before every caption, as cogvideox-factory's --id_token: T5 "
        "encodes it and the exports' prompts carry it")
    manifests: list[str] = setting(
        [], "table manifests to read, as globs under the data root, e.g. meta/*.csv (default: "
        "every top-level *.csv, *.jsonl and *.parquet; one without caption and video columns "
        "is skipped with a warning, while a file a glob names must be a manifest)")
    settle_s: float = setting(
        0.0, "seconds a video must have been left unchanged before it is read; a younger one "
        "is deferred to a later run (files that change while being hashed or read always are)",
        ge=0)

    _data_root_absolute = field_validator("data_root")(_absolute)

    @field_validator("id_token")
    @classmethod
    def _one_line_token(cls, token: str | None) -> str | None:
        if token is None:
            return None
        if not token.strip() or token != token.strip() or "\n" in token or "\r" in token:
            raise ValueError("must be a non-empty word on one line, without leading or "
                             "trailing spaces (one space joins it to each caption)")
        return token

    @field_validator("manifests", mode="before")
    @classmethod
    def _globs(cls, value: Any) -> list[str]:
        """Relative globs that stay inside the data root, from a list or one comma-separated
        string."""
        items = value.split(",") if isinstance(value, str) else list(value or [])
        globs = [str(item).strip() for item in items if str(item).strip()]
        for glob in globs:
            if glob.startswith(("/", "\\")) or ".." in glob.replace("\\", "/").split("/"):
                raise ValueError(f"{glob!r} must be relative to the data root and not climb "
                                 "out of it with '..'")
        return globs


class FrameSettings(_Group):
    """Which frames a clip gives: buckets, sampling window, short clips and resizing."""

    buckets: list[str] = setting(
        [], "frame buckets FxHxW, e.g. 49x480x720,49x720x480 (default: the profile's shape)")
    token_budget: Optional[int] = setting(
        None, "or: aspect-ratio buckets within this many video tokens, e.g. 13312", gt=0)
    sample_start: StartPolicy = setting(
        StartPolicy.start, "where the sampling window starts: start, centre, random (seeded)")
    seed: int = setting(0, "seed of random windows and of the exports' latent draws")
    resize: ResizeMode = setting(
        ResizeMode.cover, "cover (keep aspect, centre crop), stretch, or crop (no scaling)")
    short_clips: ShortClipPolicy = setting(
        ShortClipPolicy.reject, "clips shorter than their window: reject, stride (spread the "
        "window over the clip) or pad (repeat the last frame)")

    @field_validator("buckets", mode="before")
    @classmethod
    def _bucket_keys(cls, value: Any) -> list[str]:
        """`FxHxW` keys, from a list or one comma-separated string."""
        items = value.split(",") if isinstance(value, str) else list(value or [])
        texts = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
        return [Bucket.parse(text).key for text in texts]

    @model_validator(mode="after")
    def _one_kind_of_bucket(self) -> "FrameSettings":
        if self.buckets and self.token_budget:
            raise ValueError("give either buckets or token_budget, not both")
        return self


class MediaLimits(_Group):
    """Limits that protect a shard from hostile or absurd files: a file over one is rejected
    with that reason (checked from the probe, before any decoding) and the shard goes on."""

    max_pixels: int = setting(7680 * 4320, "most pixels per frame (default: 8K UHD)", ge=1)
    min_side: int = setting(16, "fewest pixels on a frame's short side", ge=1)
    max_duration_s: float = setting(3 * 3600.0, "longest clip, in seconds", gt=0)
    max_file_bytes: int = setting(64 << 30, "largest video file, in bytes (default: 64 GiB)",
                                  ge=1)
    decode_timeout_s: float = setting(
        300.0, "seconds one clip may take to decode (a scene scan: per minute of footage); a "
        "slower decode is stopped and the clip rejected as decode_timeout", gt=0)
    probe_timeout_s: float = setting(
        60.0, "seconds reading one file's headers may take; a slower probe is stopped and the "
        "file rejected as probe_timeout", gt=0)


class SegmentSettings(_Group):
    """Long videos: cut sources at scene changes into clips, score them and filter them.

    All off by default: each manifest row is then one clip, exactly as without this group.
    With split_scenes, or with any threshold or aesthetic weights, each source is decoded once
    (cached by its content hash and the detector's settings); changing a threshold or a clip
    length re-filters from the stored scores without decoding."""

    split_scenes: bool = setting(
        False, "cut each source video at scene changes: every segment becomes a clip "
        "(source_video, start_s, end_s)")
    min_clip_s: float = setting(
        3.0, "shortest segment kept, in seconds; shorter ones are rejected as segment_too_short",
        gt=0)
    max_clip_s: float = setting(
        10.0, "longest segment, in seconds; a longer scene is cut into consecutive windows of "
        "this length", gt=0)
    scene_detector: SceneDetectorKind = setting(
        SceneDetectorKind.adaptive, "PySceneDetect detector: adaptive (a cut must stand out "
        "from its neighbours; steadier under camera motion) or content (a fixed threshold)")
    scene_threshold: Optional[float] = setting(
        None, "the detector's threshold; lower finds more cuts (default: 3.0 adaptive, 27.0 "
        "content)", gt=0)
    min_motion: Optional[float] = setting(
        None, "reject clips whose motion_score (mean optical-flow speed, in frame lengths per "
        "second, where the picture changed beyond compression noise) is under this, as "
        "low_motion (e.g. 0.002)", ge=0)
    min_brightness: Optional[float] = setting(
        None, "reject clips whose brightness (mean luma, 0-1) is under this, as too_dark "
        "(e.g. 0.1)", ge=0, le=1)
    min_sharpness: Optional[float] = setting(
        None, "reject clips whose sharpness (variance of the Laplacian on a 256-pixel frame) "
        "is under this, as blurry (e.g. 50)", ge=0)
    min_aesthetic: Optional[float] = setting(
        None, "reject clips whose aesthetic_score is under this, as low_aesthetic (needs "
        "aesthetic_weights; LAION's scale is 1-10)")
    aesthetic_weights: Optional[str] = setting(
        None, "local directory with a CLIP model in transformers layout (clip/) and an MLP "
        "head (aesthetic_head.safetensors): scores aesthetic_score (default: not scored)")

    @field_validator("aesthetic_weights")
    @classmethod
    def _weights_absolute(cls, path: str | None) -> str | None:
        return None if path is None else _absolute(path)

    @model_validator(mode="after")
    def _consistent(self) -> "SegmentSettings":
        if self.max_clip_s < self.min_clip_s:
            raise ValueError(f"max_clip_s ({self.max_clip_s:g}) is under min_clip_s "
                             f"({self.min_clip_s:g})")
        if self.min_aesthetic is not None and not self.aesthetic_weights:
            raise ValueError("min_aesthetic needs aesthetic_weights, the CLIP + MLP head "
                             "directory that scores aesthetic_score")
        return self

    @property
    def active(self) -> bool:
        """Whether sources are scanned at all (else every manifest row passes as one clip)."""
        return self.split_scenes or self.aesthetic_weights is not None or any(
            value is not None for value in self.thresholds().values())

    def thresholds(self) -> dict[str, float | None]:
        """score column -> the least value a clip may have (None: not filtered)."""
        return {"motion_score": self.min_motion, "brightness": self.min_brightness,
                "sharpness": self.min_sharpness, "aesthetic_score": self.min_aesthetic}


LANGUAGE_PATTERN = re.compile(r"[a-z]{2}|any")
ENDPOINT_PATTERN = re.compile(r"https?://\S+")


class CaptionSettings(_Group):
    """Captions written, polished and checked: which clips get one, from what, and how.

    Off by default (caption_mode manifest, no polishing): every clip keeps the caption it came
    with, exactly as without this group. A written caption is stored under a key of the frames
    it was written from, the captioner and the prompt, so a rerun asks for nothing new and a
    new caption re-encodes only its T5 embedding. The endpoint's API key is read from
    COG_ASSETS_CAPTION_API_KEY only: it is no setting, so it is never shown, stored or hashed."""

    caption_mode: CaptionMode = setting(
        CaptionMode.manifest, "which clips get a written caption: manifest (none: every clip "
        "keeps its own), fill (those with none), segments (fill, and every segment of a source "
        "cut into two or more) or replace (every clip)")
    caption_model: Optional[str] = setting(
        None, "the captioner: a local image-text-to-text model (directory or hub id, e.g. "
        "Qwen/Qwen2.5-VL-7B-Instruct; tiny: a seeded toy one) or, with caption_endpoint, the "
        "model name the endpoint serves")
    caption_revision: Optional[str] = setting(
        None, "hub revision of a local caption_model (default: main)")
    caption_endpoint: Optional[str] = setting(
        None, "an OpenAI-compatible chat-completions API (vllm serve, sglang, TGI, a hosted "
        "one), e.g. http://127.0.0.1:8000/v1: frames go as JPEG data URLs; its key from "
        "COG_ASSETS_CAPTION_API_KEY")
    caption_prompt: Optional[str] = setting(
        None, "what the captioner is asked (default: one detailed English paragraph on the "
        "subjects, actions, setting, lighting and camera, cog_assets/captions/prompts.py)")
    caption_frames: int = setting(
        8, "frames a captioner sees, spread evenly over the clip's own window", ge=1, le=64)
    caption_frame_size: int = setting(
        448, "longest side of those frames, in pixels (aspect kept)", ge=28, le=4096)
    caption_max_tokens: int = setting(
        300, "most tokens a captioner (or the polishing LLM) may write", ge=8, le=8192)
    caption_temperature: float = setting(
        0.0, "sampling temperature of the captioner and the polishing LLM (0: greedy, the "
        "same caption every time)", ge=0, le=2)
    caption_batch_size: int = setting(4, "clips a local captioner writes for at once", ge=1)
    caption_concurrency: int = setting(
        8, "requests in flight at once to caption_endpoint", ge=1, le=256)
    caption_timeout_s: float = setting(
        120.0, "seconds one endpoint request may take before it is tried again", gt=0)
    caption_retries: int = setting(
        3, "tries again per request after a timeout, a 429 or a 5xx (with backoff); then the "
        "clip is rejected as caption_failed and asked again on the next run", ge=0, le=20)
    caption_polish: bool = setting(
        False, "rewrite every caption with the LLM at caption_endpoint (one detailed English "
        "paragraph within T5's 226 tokens; translates): caption_source polished")
    caption_polish_prompt: Optional[str] = setting(
        None, "file holding the polishing system prompt (default: the built-in one, in the "
        "spirit of CogVideo's convert_demo.py)")
    caption_polish_model: Optional[str] = setting(
        None, "model name the endpoint polishes with (default: caption_model)")
    caption_language: str = setting(
        "en", "language every caption must be in (ISO 639-1, e.g. en), or any: a caption in "
        "another is rejected as non_english unless polishing translated it")
    caption_over_limit: CaptionOverLimit = setting(
        CaptionOverLimit.flag, "a written caption over T5's token limit: flag (kept, flagged "
        "caption_truncated), reject (caption_too_long) or polish (rewritten to fit)")
    caption_trust_remote_code: bool = setting(
        False, "let a local caption_model run code from its repository (transformers' "
        "trust_remote_code; off: only the model classes transformers ships)")

    @field_validator("caption_polish_prompt")
    @classmethod
    def _prompt_file(cls, path: str | None) -> str | None:
        if path is None:
            return None
        path = _absolute(path)
        if not Path(path).is_file():
            raise ValueError(f"{path} is not a file")
        return path

    @field_validator("caption_language")
    @classmethod
    def _language(cls, code: str) -> str:
        code = code.strip().lower()
        if not LANGUAGE_PATTERN.fullmatch(code):
            raise ValueError(f"{code!r} is not a two-letter ISO 639-1 code (en, de, ...) or any")
        return code

    @field_validator("caption_endpoint")
    @classmethod
    def _endpoint(cls, url: str | None) -> str | None:
        if url is not None and not ENDPOINT_PATTERN.fullmatch(url):
            raise ValueError(f"{url!r} is not an http(s) URL, e.g. http://127.0.0.1:8000/v1")
        return None if url is None else url.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> "CaptionSettings":
        if self.captions_written and not self.caption_model:
            raise ValueError(f"caption_mode {self.caption_mode} needs caption_model: a local "
                             "model (directory or hub id) or, with caption_endpoint, the name "
                             "of the model it serves")
        if self.caption_endpoint and not self.caption_model and not self.caption_polish_model:
            raise ValueError("caption_endpoint needs caption_model, the name of the model it "
                             "serves")
        polishing = self.caption_polish or self.caption_over_limit == CaptionOverLimit.polish
        if polishing and not self.caption_endpoint:
            raise ValueError("polishing (caption_polish, caption_over_limit polish) needs "
                             "caption_endpoint, the chat-completions API of the LLM that "
                             "rewrites captions")
        return self

    @property
    def captions_written(self) -> bool:
        """Whether the caption step writes captions (any mode but manifest)."""
        return self.caption_mode != CaptionMode.manifest

    @property
    def active(self) -> bool:
        """Whether the caption step does anything but pass the captions through unchanged."""
        return self.captions_written or self.caption_polish

    @property
    def local_model(self) -> bool:
        """Whether captions are written by a model loaded here (a GPU step), not an endpoint."""
        return self.captions_written and not self.caption_endpoint


class ModelSettings(_Group):
    """Which CogVideoX model the dataset is for, and where its weights are."""

    profile: str = setting("tiny", "model profile: " + ", ".join(PROFILES))
    weights: Optional[str] = setting(
        None, "local diffusers-layout directory (vae/, text_encoder/, tokenizer/) or hub id "
        "(default: the profile's hub id; the tiny profiles need none)")
    revision: Optional[str] = setting(None, "hub revision of the weights (default: main)")
    image_latent_scaling: ImageLatentScaling = setting(
        ImageLatentScaling.inference, "I2V image latents: inference (divided by the scaling "
        "factor where the VAE has invert_scale_latents, as diffusers' I2V pipeline) or "
        "multiply (always, as the older trainers)")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        return get_profile(name).name


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


class DeviceSettings(_Group):
    """The accelerator GPU steps run on, in what dtype and batch sizes."""

    device: str = setting("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    dtype: Dtype = setting(Dtype.auto, "auto (bfloat16 on a GPU, float32 on a CPU), float32, "
                           "bfloat16 or float16")
    batch_size: int = setting(1, "VAE batch size (clips of one bucket)", ge=1)
    text_batch_size: int = setting(8, "T5 batch size (captions)", ge=1)
    vae_slicing: bool = setting(False, "VAE slicing: less memory for batches, same results")
    vae_tiling: bool = setting(False, "VAE tiling: less memory for large frames (changes the "
                               "latents, so it is part of their key)")
    gpu_lock_dir: Optional[str] = setting(
        None, "where GPU steps claim a GPU each on a multi-GPU host (a lock file per GPU; "
        "default: cog-assets-gpus in the system temp directory)")
    vae_compile: VaeCompile = setting(
        VaeCompile.auto, "compile the VAE's encoder with torch.compile (inductor; its cache "
        "is kept under DAGSTER_HOME for the next runs): off, on, or auto (only when a step's "
        "clips pay back the compilation, by the costs measured on this machine; never for "
        "one clip). Same latents within float rounding, same keys")

    @field_validator("device")
    @classmethod
    def _known_device(cls, name: str) -> str:
        if not DEVICE_PATTERN.fullmatch(name):
            raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
        return name


class StoreSettings(_Group):
    """The content-addressed store: artefacts, tables, finished datasets and exports."""

    url: str = setting(str(DEMO_DIR / "store"), "store directory or fsspec URL (s3://...)",
                       flag="store", validate_default=True)
    verify_artifacts: bool = setting(
        False, "reuse only artefacts whose data matches their recorded digest (reads every "
        "reused frame tensor too; by default frames are checked by size and header)")
    frames_retention: FramesRetention = setting(
        FramesRetention.until_published, "how long frame tensors stay in the store: keep, "
        "until_published (dropped once their shard's dataset is published; decoded again "
        "only when new latents need them) or none (dropped once their latents are written)")
    gc_grace_s: float = setting(
        3600.0, "cog-assets gc removes nothing written in the last this many seconds: "
        "unreferenced artefacts, quarantined files and killed runs' temporary files must be "
        "older, old shard versions and retired shards superseded that long ago (readers that "
        "opened them finish; 0 may break open readers); files a running run holds are never "
        "removed", ge=0)

    _url_absolute = field_validator("url")(_absolute)


class ClipSettings(_Group):
    """Clip files: each accepted clip cut out of its source as an H.264 MP4 (upright, square
    pixels, constant frame rate, no audio), for the trainers that read video files (the
    videox-fun and cogvideo-finetune exports)."""

    clip_crf: int = setting(
        18, "x264 quality of re-encoded clip files (constant rate factor, 0-51: lower is "
        "better and bigger; 18 is visually lossless for most footage)", ge=0, le=51)
    export_keyframes: bool = setting(
        False, "the video exports also write each clip's first and last frame as PNGs "
        "(keyframes/<stem>_first.png, _last.png), for image-to-video and InPaint training "
        "that conditions on start and end images")


class OrchestrationSettings(_Group):
    """How runs are executed. These shape the Dagster definitions themselves (executor,
    automation conditions, Kubernetes op tags), so they are set where the code location or
    the CLI starts, not per run in the launchpad."""

    executor: Executor = setting(
        Executor.in_process, "in_process (every step in the run's process), multiprocess (a "
        "process per step), celery (needs celery_broker) or k8s (a pod per step)")

    @property
    def steps_run_in_process(self) -> bool:
        """Whether a run's steps run in the process that launches it (in_process)."""
        return self.executor == Executor.in_process
    automation: bool = setting(
        False, "Declarative Automation: every asset runs when missing or when an upstream's "
        "data version changed")
    celery_broker: Optional[str] = setting(
        None, "Celery broker the workers listen on, e.g. redis://127.0.0.1:6379/0")
    celery_backend: Optional[str] = setting(
        None, "Celery result backend (default: the broker for Redis, else rpc://)")
    k8s_gpus: int = setting(1, "GPUs each GPU step's Kubernetes pod requests", ge=0)
    k8s_node_selector: Optional[str] = setting(
        None, 'node selector of GPU steps\' pods, as JSON, e.g. {"gpu": "h100"}')

    @field_validator("k8s_node_selector")
    @classmethod
    def _json_object(cls, text: str | None) -> str | None:
        if text is not None:
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"not JSON: {exc}") from None
            if not isinstance(value, dict):
                raise ValueError("must be a JSON object of label: value")
        return text

    @model_validator(mode="after")
    def _celery_has_broker(self) -> "OrchestrationSettings":
        if self.executor == Executor.celery and not self.celery_broker:
            raise ValueError("executor celery needs celery_broker, the Celery broker URL the "
                             "workers listen on, e.g. redis://127.0.0.1:6379/0")
        return self

    def celery_urls(self) -> tuple[str, str]:
        """(broker, backend) of the celery executor and its workers."""
        broker = self.celery_broker or ""
        backend = self.celery_backend or (
            broker if broker.startswith(("redis://", "rediss://")) else "rpc://")
        return broker, backend

    def node_selector(self) -> dict[str, str] | None:
        return json.loads(self.k8s_node_selector) if self.k8s_node_selector else None


class Settings(BaseModel):
    """All settings, by group. Build with `load_settings()` (environment + overrides) or
    `Settings.of(**flat)` (flat names, as on the CLI, no environment)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sources: SourceSettings = SourceSettings()
    frames: FrameSettings = FrameSettings()
    limits: MediaLimits = MediaLimits()
    segments: SegmentSettings = SegmentSettings()
    captions: CaptionSettings = CaptionSettings()
    model: ModelSettings = ModelSettings()
    device: DeviceSettings = DeviceSettings()
    store: StoreSettings = StoreSettings()
    clips: ClipSettings = ClipSettings()
    orchestration: OrchestrationSettings = OrchestrationSettings()

    @model_validator(mode="after")
    def _fits_the_model(self) -> "Settings":
        """Buckets must satisfy the profile's rules (frame form, multiples of 16, ...)."""
        try:
            choose_buckets(get_profile(self.model.profile), self.frames.buckets,
                           self.frames.token_budget)
        except ProfileError as exc:
            raise ValueError(f"the buckets do not fit profile {self.model.profile}: {exc}"
                             ) from None
        return self

    @classmethod
    def of(cls, **flat: Any) -> "Settings":
        """Settings from flat names (`data_root=`, `store=`, `shards=`, ...), no environment."""
        return load_settings(env={}, overrides=flat)

    def with_(self, **flat: Any) -> "Settings":
        """A copy with some settings changed, by flat name."""
        return load_settings(env={}, overrides={**flat_values(self), **flat})


# Groups that become Dagster resources, by resource key (orchestration shapes the definitions).
RESOURCE_GROUPS: dict[str, type[BaseModel]] = {
    "sources": SourceSettings, "frames": FrameSettings, "limits": MediaLimits,
    "segments": SegmentSettings, "model": ModelSettings, "device": DeviceSettings,
    "store": StoreSettings, "captions": CaptionSettings, "clips": ClipSettings,
}
# Every group, in the order the CLI's --help and the README's table list them.
GROUPS: dict[str, type[BaseModel]] = {
    **{key: group for key, group in RESOURCE_GROUPS.items() if key != "captions"},
    "orchestration": OrchestrationSettings, "captions": CaptionSettings}


# -- the flat view: one name per setting, for the CLI and the environment ------------------

@dataclass(frozen=True)
class SettingField:
    group: str
    name: str  # the field's name in its group
    info: FieldInfo

    @property
    def flat(self) -> str:
        """The setting's one name outside its group: flag, variable and README row."""
        extra = self.info.json_schema_extra
        return extra.get("flag") or self.name if isinstance(extra, dict) else self.name

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.flat.upper()

    @property
    def flag(self) -> str:
        return "--" + self.flat.replace("_", "-")

    @property
    def kind(self) -> type:
        """The field's type without Optional / list around it."""
        annotation = self.info.annotation
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if args else annotation

    @property
    def is_list(self) -> bool:
        return get_origin(self.info.annotation) is list

    @property
    def is_bool(self) -> bool:
        return self.kind is bool

    @property
    def choices(self) -> tuple[str, ...] | None:
        kind = self.kind
        return kind.words() if isinstance(kind, type) and issubclass(kind, Choice) else None

    @property
    def default(self) -> Any:
        return self.info.default

    def text(self, value: Any) -> str:
        """The value as its environment variable holds it."""
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        return str(value)

    def default_text(self) -> str:
        if self.default is None or self.default == []:
            return "unset"
        return self.text(self.default)


@cache
def setting_fields() -> tuple[SettingField, ...]:
    fields = tuple(SettingField(group, name, info) for group, model in GROUPS.items()
                   for name, info in model.model_fields.items())
    flats = [f.flat for f in fields]
    duplicated = {name for name in flats if flats.count(name) > 1}
    if duplicated:  # a programming error: every setting needs its own flag and variable
        raise AssertionError(f"settings share a flat name: {sorted(duplicated)}")
    return fields


def field_by_flat(flat: str) -> SettingField:
    for field in setting_fields():
        if field.flat == flat:
            return field
    known = ", ".join(f.flat for f in setting_fields())
    raise SettingsError(f"unknown setting {flat!r}; known settings: {known}")


def flat_values(settings: Settings) -> dict[str, Any]:
    return {f.flat: getattr(getattr(settings, f.group), f.name) for f in setting_fields()}


def load_settings(env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Defaults, then the `COG_ASSETS_*` variables of `env` (default: the process's), then
    `overrides` by flat name (the CLI's flags). Raises SettingsError naming each bad value."""
    env = os.environ if env is None else env
    values: dict[str, dict[str, Any]] = {}
    origins: dict[tuple[str, str], str] = {}
    for field in setting_fields():
        raw = env.get(field.env)
        if raw is not None and raw.strip():
            values.setdefault(field.group, {})[field.name] = raw.strip()
            origins[field.group, field.name] = f"{field.env}={raw.strip()}"
    for flat, value in (overrides or {}).items():
        field = field_by_flat(flat)
        values.setdefault(field.group, {})[field.name] = value
        origins[field.group, field.name] = f"{field.flag} {field.text(value)}"
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, origins)) from None


def _describe(error: ValidationError, origins: Mapping[tuple[str, str], str]) -> str:
    lines = []
    for problem in error.errors():
        loc = tuple(str(part) for part in problem["loc"])
        context = problem.get("ctx") or {}
        message = str(context["error"]) if "error" in context else problem["msg"]
        if len(loc) >= 2 and (loc[0], loc[1]) in {(f.group, f.name) for f in setting_fields()}:
            field = next(f for f in setting_fields() if (f.group, f.name) == loc[:2])
            where = origins.get(loc[:2], "the default")
            lines.append(f"setting {field.flat} ({where}): {message}")
        else:  # a rule between settings: its message names them
            lines.append(message)
    return "invalid settings:\n  " + "\n  ".join(lines) if len(lines) > 1 else lines[0]


def settings_env(settings: Settings, changed_only: bool = False) -> dict[str, str]:
    """The `COG_ASSETS_*` variables that make `load_settings()` return `settings` (every
    setting that has a value, or only those that differ from the default)."""
    env = {}
    for field in setting_fields():
        value = getattr(getattr(settings, field.group), field.name)
        if value is None or value == []:
            continue
        if changed_only and value == getattr(GROUPS[field.group](), field.name):
            continue
        env[field.env] = field.text(value)
    return env


# -- the CLI and the README, derived ---------------------------------------------------------

_DEST = "setting__"


def add_setting_arguments(parser: argparse.ArgumentParser, groups: Iterable[str] | None = None,
                          exclude: Iterable[str] = ()) -> None:
    """One flag per setting of `groups` (default: all), in an argument group per concern.
    Flags default to unset, so the environment and the defaults show through."""
    wanted = list(GROUPS) if groups is None else list(groups)
    skipped = set(exclude)
    for group in wanted:
        model = GROUPS[group]
        section = parser.add_argument_group(f"{group} settings",
                                            (model.__doc__ or "").split("\n\n")[0])
        for field in setting_fields():
            if field.group != group or field.flat in skipped:
                continue
            kwargs: dict[str, Any] = {
                "dest": _DEST + field.flat, "default": argparse.SUPPRESS,
                "help": (f"{field.info.description} [{field.env}; default: "
                         f"{field.default_text()}]").replace("%", "%%"),
            }
            if field.is_bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif field.is_list:
                kwargs.update(nargs="+", metavar=field.flat.upper().rstrip("S"))
            elif field.choices:
                kwargs["choices"] = field.choices
            else:
                kwargs["metavar"] = field.flat.upper()
            section.add_argument(field.flag, **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, by flat name."""
    return {dest[len(_DEST):]: value for dest, value in vars(args).items()
            if dest.startswith(_DEST)}


def settings_table() -> str:
    """The README's table of settings, as Markdown."""
    rows = ["| variable | flag | meaning | default |", "|---|---|---|---|"]
    for field in setting_fields():
        default = field.default_text()
        if field.flat in ("data_root", "store"):
            default = default.replace(str(Path.cwd()) + os.sep, "./")
        description = (field.info.description or "").replace("|", "\\|")
        rows.append(f"| `{field.env}` | `{field.flag}` | {description} | `{default}` |")
    return "\n".join(rows)
