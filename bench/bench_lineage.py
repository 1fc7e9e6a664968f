"""What a change costs on the wall clock: first backfill vs a no-op one vs one after changes.

Generates N clips (default 36) over S shards (default 8), then runs `cog-assets backfill` as a
user or CI does, each time a fresh process (start-up, imports and model loading included):

1. the first backfill (fresh store and instance);
2. again with nothing changed: every shard is up to date, none is launched;
3. after changing one video's bytes and one caption and deleting one video: only the shards
   they fall in run.

Prints wall times, their ratios to the first run, which shards ran and what was computed.
With `--in-process` the three backfills run in this process instead (`materialize_shards`),
which leaves out the process start-up.

Then (unless `--wide 0`) the no-op again over `--wide` shards (default 64, three clips per
shard, in a data root, store and instance of their own): a no-op's cost must not grow with
the shards (issue 21: 64 shards <= 2x the 8-shard no-op), so each no-op is run three times
and the least counts, with its CPU seconds beside (they do not move with the load).

    python bench/bench_lineage.py [--clips 36] [--shards 8] [--wide 64] [--in-process]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from cog_assets.media.synthetic import write_test_video  # noqa: E402


def make_data(root: Path, clips: int) -> None:
    videos, prompts = [], []
    for i in range(clips):
        name = f"clips/c{i:03d}.mp4"
        write_test_video(root / name, width=320, height=240, fps=24, seconds=3.0, seed=i)
        videos.append(name)
        prompts.append(f"a bright square crossing scene {i}")
    (root / "videos.txt").write_text("\n".join(videos) + "\n")
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")


def change(root: Path) -> None:
    """New bytes for c000, a new caption for c001, c002 deleted."""
    write_test_video(root / "clips/c000.mp4", width=320, height=240, seconds=3.0, seed=999)
    prompts = (root / "prompts.txt").read_text().splitlines()
    videos = (root / "videos.txt").read_text().splitlines()
    prompts[1] = "an entirely different caption"
    del videos[2], prompts[2]
    (root / "clips/c002.mp4").unlink()
    (root / "videos.txt").write_text("\n".join(videos) + "\n")
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")


def cli_backfill(tmp: Path, shards: int, log: str) -> tuple[float, dict]:
    from bench_real_clips import timed

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("COG_ASSETS_")},
           "DAGSTER_HOME": str(tmp / "home"), "PYTHONPATH": str(HERE.parent)}
    argv = [str(Path(sys.executable).with_name("cog-assets")), "backfill", "--data-root",
            str(tmp / "data"), "--store", str(tmp / "store"), "--shards", str(shards),
            "--device", "cpu", "--summary-json", str(tmp / "summary.json")]
    result = timed(argv, env, tmp / log, check=False)
    return result["seconds"], json.loads((tmp / "summary.json").read_text())["shards"]


def in_process_backfill(tmp: Path, shards: int, instance) -> tuple[float, dict]:
    from cog_assets.core.config import Settings
    from cog_assets.defs.runs import materialize_shards

    settings = Settings.of(data_root=str(tmp / "data"), store=str(tmp / "store"),
                           shards=shards, device="cpu")
    started = time.perf_counter()
    summaries = materialize_shards(settings, instance)
    return time.perf_counter() - started, {k: s.as_dict() for k, s in summaries.items()}


def cpu_timed_backfill(tmp: Path, shards: int) -> tuple[float, float]:
    """(wall, CPU seconds) of one fresh `cog-assets backfill` process."""
    import resource
    import subprocess

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("COG_ASSETS_")},
           "DAGSTER_HOME": str(tmp / "home"), "PYTHONPATH": str(HERE.parent)}
    argv = [str(Path(sys.executable).with_name("cog-assets")), "backfill", "--data-root",
            str(tmp / "data"), "--store", str(tmp / "store"), "--shards", str(shards),
            "--device", "cpu"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def no_op_costs(tmp: Path, shards: int, clips: int) -> tuple[float, float, float]:
    """(first run wall, least no-op wall, its CPU) over `shards` shards."""
    make_data(tmp / "data", clips)
    first, _ = cpu_timed_backfill(tmp, shards)
    noops = [cpu_timed_backfill(tmp, shards) for _ in range(3)]
    wall, cpu = min(noops)
    return first, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=36)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--wide", type=int, default=64,
                        help="then the no-op over this many shards (0: skip)")
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_data(tmp / "data", args.clips)
        load = os.getloadavg()[0]
        if args.in_process:
            from dagster import instance_for_test

            with instance_for_test() as instance:
                def backfill(log):
                    return in_process_backfill(tmp, args.shards, instance)
                rows = run_all(tmp, backfill)
        else:
            rows = run_all(tmp, lambda log: cli_backfill(tmp, args.shards, log))
    how = "in this process" if args.in_process else "each a fresh `cog-assets backfill` process"
    print(f"{args.clips} clips, {args.shards} shards, tiny profile, CPU ({os.cpu_count()} cores), "
          f"{how}; load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f}")
    print(f"{'run':30}{'seconds':>9}{'of first':>10}{'shards run':>12}{'computed':>10}")
    first = rows[0][1]
    for label, seconds, summary in rows:
        ran = [k for k, s in summary.items() if not s.get("up_to_date")]
        computed = sum(s["computed"] for s in summary.values())
        print(f"{label:30}{seconds:9.2f}{seconds / first:10.2f}{len(ran):12}{computed:10}")
    print("computed counts frames, latents and embeddings: the change run should compute 3 "
          "(1 video: frames + latents; 1 caption: 1 embedding)")
    for label, _seconds, summary in rows:
        for shard, s in summary.items():
            if not s["success"]:
                print(f"FAILED in {label}: {shard}: {s['failure']}")
    if args.wide and not args.in_process:
        with tempfile.TemporaryDirectory() as narrow, tempfile.TemporaryDirectory() as wide:
            small = no_op_costs(Path(narrow), args.shards, args.clips)
            large = no_op_costs(Path(wide), args.wide, 3 * args.wide)
        print(f"no-op by shard count (least of 3 fresh processes; load average now "
              f"{os.getloadavg()[0]:.1f}):")
        for shards, (first, wall, cpu) in ((args.shards, small), (args.wide, large)):
            print(f"  {shards:3} shards: first run {first:7.1f} s, no-op {wall:5.2f} s "
                  f"({wall / first:.2f} of the first run), {cpu:5.2f} CPU s")
        print(f"  {args.wide} shards / {args.shards} shards: {large[1] / small[1]:.2f}x wall, "
              f"{large[2] / small[2]:.2f}x CPU (target <= 2x)")


def run_all(tmp: Path, backfill) -> list[tuple[str, float, dict]]:
    rows = [("first", *backfill("first.log"))]
    rows.append(("no change", *backfill("noop.log")))
    change(tmp / "data")
    rows.append(("1 video, 1 caption, 1 deleted", *backfill("change.log")))
    return rows


if __name__ == "__main__":
    main()
