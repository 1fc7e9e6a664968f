"""cog-assets against the trainer-style baseline on real clips, in one run.

The clips: every video of the shared real-media corpus (`$COG_ASSETS_MEDIA/videos`, default
../shared/media), copied into a data root with one caption each (VBench prompts), at
49x240x368 with the tiny profile on the CPU. Short clips are strided over (cogvideox-factory
spreads its frame indices over the video), in both. Everything else is at default settings.

Each row is a fresh process, timed from its start to its exit (imports and model loading
included), with its whole process tree's memory sampled:

1. the baseline (`trainer_baseline.py`: seek + decode only the sampled frames, VAE one clip at
   a time, T5 one caption at a time, one process; a one-shot script, so it recomputes
   everything on every run, after a change too);
2. `cog-assets backfill`, first run (fresh store and instance);
3. `cog-assets backfill` again, nothing changed;
4. one clip replaced by a new video, `cog-assets backfill` again.

    python bench/bench_real_clips.py [--bucket 49x240x368] [--repeat-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_memory import descendants, memory_kib  # noqa: E402

MEDIA = Path(os.environ.get("COG_ASSETS_MEDIA") or HERE.parent.parent / "shared" / "media")
CAPTIONS = "captions/vbench_all_dimension_longer.txt"


def make_data_root(root: Path) -> list[str]:
    videos = sorted(p for p in (MEDIA / "videos").iterdir() if p.is_file())
    captions = [line.strip() for line in (MEDIA / CAPTIONS).read_text().splitlines()
                if line.strip()]
    (root / "clips").mkdir(parents=True)
    names = []
    for video in videos:
        shutil.copyfile(video, root / "clips" / video.name)
        names.append(f"clips/{video.name}")
    (root / "videos.txt").write_text("\n".join(names) + "\n")
    (root / "prompts.txt").write_text("\n".join(captions[:len(names)]) + "\n")
    return names


def timed(argv: list[str], env: dict, log: Path, check: bool = True) -> dict:
    """Wall seconds of `argv` as a fresh process; peak RSS of its largest process and of
    its tree (sampled every 20 ms)."""
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak_one = peak_tree = 0
        while process.poll() is None:
            sizes = [memory_kib(pid)[1] for pid in descendants(process.pid)]
            peak_one = max(peak_one, max(sizes, default=0))
            peak_tree = max(peak_tree, sum(sizes))
            time.sleep(0.02)
    seconds = time.perf_counter() - started
    if process.returncode and check:
        raise SystemExit(f"{argv[:3]} failed ({process.returncode}):\n{log.read_text()[-3000:]}")
    return {"seconds": seconds, "rss_mib": peak_one / 1024, "tree_rss_mib": peak_tree / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", default="49x240x368")
    parser.add_argument("--repeat-baseline", action="store_true",
                        help="run the baseline again after the change (it recomputes all)")
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        names = make_data_root(tmp / "data")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("COG_ASSETS_")},
               "DAGSTER_HOME": str(tmp / "home"), "PYTHONPATH": str(HERE.parent)}
        baseline = [sys.executable, str(HERE / "trainer_baseline.py"), "--data-root",
                    str(tmp / "data"), "--out", str(tmp / "baseline"), "--bucket", args.bucket,
                    "--short-clips", "stride"]
        ours = [str(bin_dir / "cog-assets"), "backfill", "--data-root", str(tmp / "data"),
                "--store", str(tmp / "store"), "--buckets", args.bucket,
                "--short-clips", "stride", "--device", "cpu",
                "--summary-json", str(tmp / "summary.json")]
        load = os.getloadavg()[0]
        rows = [("baseline (trainer-style, one process)", timed(baseline, env, tmp / "b.log"))]
        rows.append(("cog-assets backfill, first run", timed(ours, env, tmp / "o1.log")))
        first = json.loads((tmp / "summary.json").read_text())["shards"]
        rows.append(("cog-assets backfill, nothing changed", timed(ours, env, tmp / "o2.log")))
        # one clip replaced by a new video (new bytes under the same name)
        from cog_assets.media.synthetic import write_test_video

        replaced = tmp / "data" / names[0]
        replaced.unlink()
        write_test_video(replaced.with_suffix(replaced.suffix), width=320, height=240,
                         fps=24, seconds=7.0, seed=123)
        rows.append(("cog-assets backfill, 1 clip replaced", timed(ours, env, tmp / "o3.log")))
        after = json.loads((tmp / "summary.json").read_text())["shards"]
        if args.repeat_baseline:
            shutil.rmtree(tmp / "baseline")
            rows.append(("baseline again after the change", timed(baseline, env,
                                                                  tmp / "b2.log")))
        print((tmp / "b.log").read_text().strip().splitlines()[-1])
    base = rows[0][1]["seconds"]
    print(f"{len(names)} real clips at {args.bucket}, tiny profile, CPU ({os.cpu_count()} "
          f"cores); load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f}")
    print(f"{'run':42}{'seconds':>9}{'baseline/this':>15}{'peak RSS MiB':>14}{'tree RSS':>10}")
    for label, r in rows:
        print(f"{label:42}{r['seconds']:9.1f}{base / r['seconds']:15.2f}{r['rss_mib']:14.0f}"
              f"{r['tree_rss_mib']:10.0f}")
    print("accepted per shard (first run):",
          {k: s["accepted"] for k, s in first.items()})
    print("after the change:", {k: ("up to date" if s["up_to_date"] else
                                     f"ran: {s['computed']} computed")
                                for k, s in after.items()})


if __name__ == "__main__":
    main()
