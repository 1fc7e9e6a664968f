"""What a change costs: first materialization vs a no-op re-run vs a re-run after changes.

Materializes N generated clips (tiny profile, CPU) through the real Dagster job, then
1. re-materializes with nothing changed (everything reused), and
2. changes one video's bytes, one caption, and deletes one video, and re-materializes.
Prints wall times, their ratios to the first run, and how many items were computed.

    python bench/bench_lineage.py --clips 24 --shards 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dagster import instance_for_test

from cog_assets.config import Settings
from cog_assets.defs.runs import materialize_shards
from cog_assets.media.synthetic import write_test_video


def make_data(root: Path, clips: int) -> None:
    videos, prompts = [], []
    for i in range(clips):
        name = f"clips/c{i:03d}.mp4"
        write_test_video(root / name, width=320, height=240, fps=24, seconds=3.0, seed=i)
        videos.append(name)
        prompts.append(f"a bright square crossing scene {i}")
    (root / "videos.txt").write_text("\n".join(videos) + "\n")
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")


def timed_run(settings: Settings, instance) -> tuple[float, int, int]:
    started = time.perf_counter()
    summaries = materialize_shards(settings, instance)
    seconds = time.perf_counter() - started
    assert all(s.success for s in summaries.values()), summaries
    return seconds, sum(s.computed for s in summaries.values()), sum(
        s.reused for s in summaries.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, instance_for_test() as instance:
        root = Path(tmp) / "data"
        make_data(root, args.clips)
        settings = Settings.of(data_root=str(root), store=str(Path(tmp) / "store"),
                               shards=args.shards, device="cpu")
        rows = [("first", *timed_run(settings, instance))]
        rows.append(("no change", *timed_run(settings, instance)))
        write_test_video(root / "clips/c000.mp4", width=320, height=240, seconds=3.0, seed=999)
        prompts = (root / "prompts.txt").read_text().splitlines()
        videos = (root / "videos.txt").read_text().splitlines()
        prompts[1] = "an entirely different caption"
        del videos[2], prompts[2]
        (root / "clips/c002.mp4").unlink()
        (root / "videos.txt").write_text("\n".join(videos) + "\n")
        (root / "prompts.txt").write_text("\n".join(prompts) + "\n")
        rows.append(("1 video, 1 caption, 1 del", *timed_run(settings, instance)))
        first = rows[0][1]
        print(f"{args.clips} clips, {args.shards} shards, tiny profile, CPU")
        print(f"{'run':<28}{'seconds':>9}{'ratio':>8}{'computed':>10}{'reused':>8}")
        for label, seconds, computed, reused in rows:
            print(f"{label:<28}{seconds:>9.2f}{seconds / first:>8.2f}{computed:>10}{reused:>8}")
        print("computed counts frames, latents and embeddings: the change run should compute "
              "3 (1 video: frames + latents; 1 caption: 1 embedding)")


if __name__ == "__main__":
    main()
