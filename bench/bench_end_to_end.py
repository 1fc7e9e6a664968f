"""End-to-end clips/s of one shard: the real stages vs a naive one-shot script, same run.

The shard: N generated H.264 clips (default 16, 640x360, 30 fps, 3 s) with captions; the tiny
profile (9 frames at 8 fps, 64x96, the real AutoencoderKLCogVideoX and T5EncoderModel classes
at toy width), on the CPU.

- ours: manifest (hashing) -> validation (probe, tokens) -> extract_frames (decode in worker
  processes, prefetching) -> encode_latents (per-bucket batches, the next batch read while the
  VAE runs) -> encode_captions, into a fresh content-addressed store;
- naive: how one-shot preprocessing scripts do it: decode every frame of every clip to
  full-size float32 first (the whole dataset in memory), then sample and resize, then encode
  one clip at a time with the same tiny VAE, and one caption at a time with the same T5.
- with --dagster, also the whole `prepare_shards` job through Dagster (materialize_shards in
  a temporary instance), which adds Dagster's own per-step overhead.

    python bench/bench_end_to_end.py [--clips 16] [--batch-size 4] [--dagster]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_count, make_shard, run_stages  # noqa: E402


def naive(data_root: Path, out: Path) -> int:
    import av
    import numpy as np
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from cog_assets.media.resize import cover_geometry
    from cog_assets.media.sampling import pick_nearest, sample_timestamps
    from cog_assets.models.text_encoder import load_text_encoder
    from cog_assets.models.vae import load_vae
    from cog_assets.models.weights import WeightsSource
    from cog_assets.profiles import get_profile

    profile = get_profile("tiny")
    videos = (data_root / "videos.txt").read_text().split()
    captions = (data_root / "prompts.txt").read_text().splitlines()
    # 1. every frame of every clip, full size, float32, all in memory
    dataset = []
    for name in videos:
        with av.open(str(data_root / name)) as container:
            times, frames = [], []
            for frame in container.decode(video=0):
                times.append(float(frame.time))
                frames.append(frame.to_ndarray(format="rgb24").astype(np.float32))
        dataset.append((np.stack(frames), [t - times[0] for t in times]))
    # 2. sample the window and resize (antialiased bilinear cover, centre crop)
    clips = []
    for frames, times in dataset:
        duration = times[-1] + (times[1] - times[0])
        picks = pick_nearest(times, sample_timestamps(duration, profile.num_frames, profile.fps,
                                                         "start", 0, short_clips="reject"))
        x = torch.from_numpy(frames[picks]).permute(0, 3, 1, 2)
        g = cover_geometry(x.shape[3], x.shape[2], profile.width, profile.height)
        x = F.interpolate(x, size=(g.scaled_height, g.scaled_width), mode="bilinear",
                          antialias=True, align_corners=False)
        x = x[:, :, g.crop_y:g.crop_y + profile.height, g.crop_x:g.crop_x + profile.width]
        clips.append(x.round().clamp(0, 255))
    # 3. one clip at a time through the VAE, 4. one caption at a time through T5
    source = WeightsSource(profile)
    vae = load_vae(source, torch.device("cpu"), torch.float32)
    encoder = load_text_encoder(source, torch.device("cpu"), torch.float32)
    latents, embeds = {}, {}
    with torch.no_grad():
        for i, clip in enumerate(clips):
            x = (clip / 127.5 - 1.0).permute(1, 0, 2, 3)[None]  # [1, 3, F, H, W]
            latents[f"clip_{i}"] = vae.encode(x).latent_dist.parameters[0].contiguous()
        for i, caption in enumerate(captions):
            embeds[f"caption_{i}"] = encoder.encode([caption])[0].contiguous()
    save_file(latents, str(out / "latents.safetensors"))
    save_file(embeds, str(out / "embeds.safetensors"))
    return len(videos)


def dagster_job(data_root: Path, store: Path, batch_size: int) -> float:
    from dagster import instance_for_test

    from cog_assets.config import Settings
    from cog_assets.defs.runs import materialize_shards

    settings = Settings.of(data_root=str(data_root), store=str(store), shards=1,
                           device="cpu", batch_size=batch_size)
    with instance_for_test() as instance:
        started = time.perf_counter()
        summaries = materialize_shards(settings, instance)
        seconds = time.perf_counter() - started
    assert all(s.success for s in summaries.values()), summaries
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=4, help="VAE batch (ours)")
    parser.add_argument("--workers", type=int, default=None, help="decode workers (ours)")
    parser.add_argument("--dagster", action="store_true", help="also time the Dagster job")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        root = make_shard(tmp / "data", args.clips, width=args.width, height=args.height,
                          fps=args.fps, seconds=args.seconds)
        print(f"generated {args.clips} clips {args.width}x{args.height} {args.fps} fps "
              f"{args.seconds:g} s in {time.perf_counter() - started:.1f} s; "
              f"{cpu_count()} CPU cores")

        (tmp / "naive").mkdir()
        started = time.perf_counter()
        count = naive(root, tmp / "naive")
        rows = [("naive: all frames float32 in memory, 1 clip at a time",
                 time.perf_counter() - started, None)]
        workers = cpu_count() if args.workers is None else args.workers
        bs = args.batch_size

        def ours(label, store, **kwargs):
            times = run_stages(root, str(tmp / store), **kwargs)
            rows.append((label, times.total, times))
            return times

        first = ours(f"ours: {workers} decode workers (cold: pool starts), VAE batch {bs}",
                     "store-cold", batch_size=bs, workers=args.workers)
        assert first.counts["latents"]["computed"] == count, first.counts
        ours(f"ours: {workers} decode workers (warm pool), VAE batch {bs}", "store-warm",
             batch_size=bs, workers=args.workers)
        ours(f"ours: decode in this process, VAE batch {bs}", "store-inline", batch_size=bs,
             workers=0)
        ours(f"ours: {workers} decode workers (warm pool), VAE batch 1", "store-b1",
             batch_size=1, workers=args.workers)
        rerun = ours("ours: re-run, everything reused from the store", "store-warm",
                     batch_size=bs, workers=args.workers)
        assert rerun.counts["latents"]["reused"] == count
        if args.dagster:
            rows.append((f"ours: the Dagster job (materialize_shards), VAE batch {bs}",
                         dagster_job(root, tmp / "store-dagster", bs), None))

    base = rows[0][1]
    print(f"{'method':66} {'seconds':>8} {'clips/s':>8} {'vs naive':>9}")
    for name, seconds, _ in rows:
        print(f"{name:66} {seconds:8.2f} {count / seconds:8.2f} {base / seconds:8.2f}x")
    for name, _, times in rows:
        if times is not None:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in times.seconds.items())
            print(f"  {name.removeprefix('ours: ')}: {parts} s")


if __name__ == "__main__":
    main()
