"""How long a hostile 8000x8000 file takes to be refused as `too_large` (issue 12).

Ours: `probe_task` with the default limits, which checks them on a first look at the headers
that decodes nothing. Baseline, in the same run: the probe before issue 12 (open with PyAV's
defaults, decode the first frame for its rotation, then compare the size with max_pixels).
Prints the median of `--repeat` verdicts each and the ratio.

    python bench/bench_probe_limits.py --side 8000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import numpy as np  # noqa: E402

from cog_assets.core.config import MediaLimits  # noqa: E402
from cog_assets.media.errors import MediaError  # noqa: E402
from cog_assets.media.probe_task import ProbeTask, probe_task  # noqa: E402

LIMITS = MediaLimits()


def write_huge(path: Path, side: int, frames: int = 2) -> None:
    """Noise frames (incompressible, as a hostile file would be), H.264 at `side` x `side`."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        rng = np.random.default_rng(0)
        for i in range(frames):
            rgb = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 1)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def before_issue_12(path: Path) -> str | None:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            _ = frame.rotation
            break
        cc = stream.codec_context
        return "too_large" if cc.width * cc.height > LIMITS.max_pixels else None


def ours(path: Path) -> str | None:
    try:
        probe_task(ProbeTask(str(path), limits=LIMITS))
    except MediaError as exc:
        return str(exc.reason)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "huge.mp4"
        write_huge(path, args.side)
        verdicts = {fn.__name__: fn(path) for fn in (before_issue_12, ours)}  # warms the cache
        times: dict[str, list[float]] = {name: [] for name in verdicts}
        for _ in range(args.repeat):
            for fn in (before_issue_12, ours):
                started = time.perf_counter()
                fn(path)
                times[fn.__name__].append(time.perf_counter() - started)
        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"{args.side}x{args.side} H.264, {path.stat().st_size / 2**20:.0f} MiB, "
              f"verdicts {verdicts}")
        before, after = med["before_issue_12"], med["ours"]
        print(f"median of {args.repeat}: before {before * 1000:.0f} ms, ours "
              f"{after * 1000:.0f} ms, before/ours {before / after:.1f}x")


if __name__ == "__main__":
    main()
