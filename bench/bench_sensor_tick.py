"""Upload-sensor tick time over many files, cold (first look) and warm (nothing changed).

Generates N empty files under a data root listed in videos.txt/prompts.txt, then times
`scan_uploads` (what `upload_sensor` runs each tick): cold hashes everything; warm stats
everything and hashes nothing; a third tick after touching 10 files and changing one re-hashes
just those. Dagster's sensor timeout is 60 s.

    python bench/bench_sensor_tick.py --files 100000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cog_assets.core.config import SourceSettings
from cog_assets.sources.uploads import UploadState, scan_uploads
from cog_assets.store.content_store import ContentStore


def make_root(root: Path, count: int) -> None:
    per_dir = 1000
    videos = []
    for i in range(count):
        directory = root / "clips" / f"{i // per_dir:04d}"
        if i % per_dir == 0:
            directory.mkdir(parents=True, exist_ok=True)
        name = f"clips/{i // per_dir:04d}/{i:07d}.mp4"
        (root / name).touch()
        videos.append(name)
    (root / "videos.txt").write_text("\n".join(videos) + "\n")
    (root / "prompts.txt").write_text("".join(f"caption {i}\n" for i in range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, store = Path(tmp) / "data", ContentStore(str(Path(tmp) / "store"))
        started = time.perf_counter()
        make_root(root, args.files)
        print(f"generated {args.files} files in {time.perf_counter() - started:.1f} s")
        sources = SourceSettings(data_root=str(root), shard_count=args.shards)
        state = UploadState(store, sources, "tiny")
        rows = []
        generation = None
        for label in ("cold", "warm", "10 touched + 1 changed"):
            if label.startswith("10"):
                for i in range(10):
                    path = root / f"clips/0000/{i:07d}.mp4"
                    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
                (root / "clips/0000/0000000.mp4").write_bytes(b"new bytes")
            started = time.perf_counter()
            tick = scan_uploads(state, generation, sources)
            rows.append((label, time.perf_counter() - started, tick.hashed, len(tick.changed)))
            generation = tick.generation
        print(f"{'tick':<24}{'seconds':>9}{'hashed':>9}{'shards to run':>15}")
        for label, seconds, hashed, changed in rows:
            print(f"{label:<24}{seconds:>9.2f}{hashed:>9}{changed:>15}")
        state_bytes = sum(f.stat().st_size for f in (Path(tmp) / "store").rglob("*.parquet"))
        print(f"cursor: {{'generation': {generation}}}; state in the store: "
              f"{state_bytes / 1e6:.1f} MB over {generation} generations (3 kept)")


if __name__ == "__main__":
    main()
