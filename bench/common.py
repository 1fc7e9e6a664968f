"""What the benchmarks share: generated shards and the real stages run on them."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_shard(root: Path, count: int, *, width: int = 640, height: int = 360, fps: int = 30,
               seconds: float = 3.0) -> Path:
    """`count` generated clips with captions in the two-file layout (videos.txt, prompts.txt).

    Each clip has its own seed, so its own bytes: the content-addressed store would otherwise
    decode and encode identical files once."""
    from cog_assets.media.synthetic import write_test_video

    root.mkdir(parents=True, exist_ok=True)
    videos, prompts = [], []
    for i in range(count):
        name = f"clips/clip_{i:04d}.mp4"
        write_test_video(root / name, width=width, height=height, fps=fps, seconds=seconds,
                         seed=i)
        videos.append(name)
        prompts.append(f"a bright square moving across scene number {i} on a {i % 7} sky")
    (root / "videos.txt").write_text("\n".join(videos) + "\n")
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return root


@dataclass
class StageTimes:
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, dict] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def run_stages(data_root: Path, store_url: str, *, batch_size: int = 4,
               workers: int | None = None, decoder_threads: int | None = None,
               text_batch_size: int = 8, bucket: str | None = None) -> StageTimes:
    """manifest -> validation -> frames -> latents + captions of a one-shard dataset, on the
    CPU with the tiny profile (its 9x64x96 bucket, or `bucket` "FxHxW"): the functions the
    Dagster assets call, without Dagster."""
    import torch

    from cog_assets.core.config import FrameSettings, MediaLimits, SourceSettings
    from cog_assets.core.keys import TextIdentity, VaeIdentity
    from cog_assets.core.profiles import get_profile
    from cog_assets.media.frame_policy import FramePolicy
    from cog_assets.models.text_encoder import (
        count_tokens,
        load_text_encoder,
        load_tokenizer,
    )
    from cog_assets.models.vae import load_vae
    from cog_assets.models.weights import WeightsSource
    from cog_assets.stages.embeddings import encode_captions
    from cog_assets.stages.frames import extract_frames
    from cog_assets.stages.latents import encode_latents
    from cog_assets.stages.manifest import build_manifest
    from cog_assets.stages.validation import validate_clips
    from cog_assets.store.content_store import ContentStore

    cpu, fp32 = torch.device("cpu"), torch.float32
    profile = get_profile("tiny")
    source = WeightsSource(profile)
    store = ContentStore(store_url)
    policy = FramePolicy.build(profile, FrameSettings(buckets=[bucket] if bucket else []))
    limits = MediaLimits()
    times = StageTimes()

    def timed(name, fn):
        started = time.perf_counter()
        result = fn()
        times.seconds[name] = time.perf_counter() - started
        return result

    tokenizer = load_tokenizer(source)
    sources = SourceSettings(data_root=str(data_root), shard_count=1)
    manifest = timed("manifest", lambda: build_manifest(sources, "shard-00000"))
    validated = timed("validate", lambda: validate_clips(
        manifest, data_root, policy, limits, lambda captions: count_tokens(tokenizer, captions)))
    frames, stats = timed("frames", lambda: extract_frames(
        validated, data_root, store, policy, decode_timeout_s=limits.decode_timeout_s,
        workers=workers, decoder_threads=decoder_threads))
    times.counts["frames"] = stats.as_metadata()
    _, stats = timed("latents", lambda: encode_latents(
        frames, store, VaeIdentity(source.identity("vae"), "float32", False),
        lambda: load_vae(source, cpu, fp32), batch_size))
    times.counts["latents"] = stats.as_metadata()
    _, stats = timed("captions", lambda: encode_captions(
        validated, store, TextIdentity(source.identity("text_encoder"), "float32",
                                       profile.text_max_length),
        lambda: load_text_encoder(source, cpu, fp32), text_batch_size))
    times.counts["captions"] = stats.as_metadata()
    return times


def cpu_count() -> int:
    return os.cpu_count() or 1
