"""End-to-end clips/s of one shard: the real stages vs the trainer-style baseline, same run.

The shard: N generated H.264 clips (default 16, 640x360, 30 fps, 3 s) with captions; the tiny
profile (9 frames at 8 fps, 64x96, the real AutoencoderKLCogVideoX and T5EncoderModel classes
at toy width), on the CPU.

- ours: manifest (hashing) -> validation (probe, tokens) -> extract_frames (decode in worker
  processes, prefetching) -> encode_latents (per-bucket batches, the next batch read while the
  VAE runs) -> encode_captions, into a fresh content-addressed store, at default settings
  (VAE batch 1, T5 batch 8, decode workers = cores);
- baseline: how the trainers' own preprocessing does it (trainer_baseline.py, in the style
  of cogvideox-factory's prepare_dataset.py): one clip at a time, seek to the sampled window
  and decode only it, convert only the sampled frames, resize, the same tiny VAE on that clip,
  the same T5 on one caption; one process;
- with --dagster, also the whole `prepare_shards` job through Dagster (materialize_shards in
  a temporary instance), which adds Dagster's own per-step overhead.

    python bench/bench_end_to_end.py [--clips 16] [--batch-size 1] [--dagster]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_count, make_shard, run_stages  # noqa: E402
from trainer_baseline import main as trainer_baseline  # noqa: E402


def baseline(data_root: Path, out: Path) -> int:
    trainer_baseline(["--data-root", str(data_root), "--out", str(out),
                      "--short-clips", "reject"])
    return len(list((out / "video_latents").iterdir()))


def dagster_job(data_root: Path, store: Path, batch_size: int) -> float:
    from dagster import instance_for_test

    from cog_assets.core.config import Settings
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
    parser.add_argument("--batch-size", type=int, default=1,
                        help="VAE batch (ours; default: the setting's default)")
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

        started = time.perf_counter()
        count = baseline(root, tmp / "baseline")
        rows = [("baseline: trainer-style, 1 clip at a time, 1 process",
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
        ours(f"ours: {workers} decode workers (warm pool), VAE batch 4", "store-b4",
             batch_size=4, workers=args.workers)
        rerun = ours("ours: re-run, everything reused from the store", "store-warm",
                     batch_size=bs, workers=args.workers)
        assert rerun.counts["latents"]["reused"] == count
        if args.dagster:
            rows.append((f"ours: the Dagster job (materialize_shards), VAE batch {bs}",
                         dagster_job(root, tmp / "store-dagster", bs), None))

    base = rows[0][1]
    print(f"{'method':66} {'seconds':>8} {'clips/s':>8} {'vs baseline':>12}")
    for name, seconds, _ in rows:
        print(f"{name:66} {seconds:8.2f} {count / seconds:8.2f} {base / seconds:8.2f}x")
    for name, _, times in rows:
        if times is not None:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in times.seconds.items())
            print(f"  {name.removeprefix('ours: ')}: {parts} s")


if __name__ == "__main__":
    main()
