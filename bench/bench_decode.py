"""Decode-only throughput: our read_clip_frames vs a plain PyAV loop, in the same run.

The clip: a generated 1280x720, 30 fps, 10 s H.264 video. The job: CogVideoX's 49 frames at
8 fps (a 6 s window) resized and centre-cropped to 480x720, uint8.

- ours: read_clip_frames (seek to the window, threaded decode, stop after the last needed
  frame, convert only the 49 picked frames, scaled in uint8 by libswscale);
- baseline: the loop one-shot scripts use: decode every frame of the file, convert each to
  RGB at full size (`frame.to_ndarray(format="rgb24")`), then pick the 49 frames by time and
  resize them (PIL bilinear to the cover size, centre crop);
- a stronger reference: the same loop, keeping only the frames it picks (still decoding and
  converting every frame at full size).

Prints output frames/s (49 frames per clip / seconds) and the ratios.

    python bench/bench_decode.py [--repeats 5] [--seconds 10] [--start start|centre]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cog_assets.core.choices import ResizeMode, ShortClipPolicy, StartPolicy  # noqa: E402
from cog_assets.media.decode import FrameSpec, read_clip_frames  # noqa: E402
from cog_assets.media.resize import cover_geometry  # noqa: E402
from cog_assets.media.sampling import pick_nearest, sample_timestamps  # noqa: E402
from cog_assets.media.synthetic import write_test_video  # noqa: E402

NUM_FRAMES, FPS, HEIGHT, WIDTH = 49, 8, 480, 720


def resize(frame: np.ndarray) -> np.ndarray:
    """PIL bilinear to the cover size, then the centre crop."""
    g = cover_geometry(frame.shape[1], frame.shape[0], WIDTH, HEIGHT)
    scaled = np.asarray(Image.fromarray(frame).resize((g.scaled_width, g.scaled_height),
                                                      Image.BILINEAR))
    return scaled[g.crop_y:g.crop_y + HEIGHT, g.crop_x:g.crop_x + WIDTH]


def baseline(path: Path, start: str) -> np.ndarray:
    """Every frame decoded and converted to full-size RGB and kept, then sampled and resized."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times, frames = [], []
        for frame in container.decode(stream):
            times.append(float(frame.time))
            frames.append(frame.to_ndarray(format="rgb24"))
    times = [t - times[0] for t in times]
    duration = times[-1] + (times[1] - times[0])
    wanted = sample_timestamps(duration, NUM_FRAMES, FPS, start, 0, short_clips="reject")
    return np.stack([resize(frames[i]) for i in pick_nearest(times, wanted)])


def reference(path: Path, start: str) -> np.ndarray:
    """Every frame decoded and converted to full-size RGB, but only the picked ones kept."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
        wanted = sample_timestamps(duration, NUM_FRAMES, FPS, start, 0, short_clips="reject")
        out, prev, t0 = [], None, None
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            t0 = frame.time if t0 is None else t0
            t = frame.time - t0
            while prev is not None and len(out) < len(wanted) and wanted[len(out)] < t:
                out.append(resize(prev))
            prev = rgb
        while len(out) < len(wanted):
            out.append(resize(prev))
    return np.stack(out)


def ours(path: Path, start: str, threads: int = 0) -> np.ndarray:
    spec = FrameSpec(NUM_FRAMES, HEIGHT, WIDTH, FPS, StartPolicy(start), 0, ResizeMode.cover,
                     ShortClipPolicy.reject)
    return read_clip_frames(path, spec, threads=threads)


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
    fn()  # warm the page cache and the libraries
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--start", default="start", choices=["start", "centre"])
    parser.add_argument("--video", type=Path, help="use this video instead of generating one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.video or write_test_video(Path(tmp) / "clip.mp4", width=1280, height=720,
                                              fps=30, seconds=args.seconds, seed=1)
        rows = [("baseline: decode all, rgb24 full size, sample, resize",
                 *timed(lambda: baseline(path, args.start), args.repeats)),
                ("reference: same, keeping only the frames it picks",
                 *timed(lambda: reference(path, args.start), args.repeats)),
                ("ours: read_clip_frames (threads auto)",
                 *timed(lambda: ours(path, args.start), args.repeats)),
                ("ours: read_clip_frames (threads=1)",
                 *timed(lambda: ours(path, args.start, threads=1), args.repeats))]
    base_s = rows[0][1]
    print(f"decode {NUM_FRAMES} frames at {FPS} fps -> {HEIGHT}x{WIDTH} from a 1280x720 30 fps "
          f"{args.seconds:g} s clip, window '{args.start}', median of {args.repeats}")
    print(f"{'method':58} {'s/clip':>8} {'frames/s':>9} {'vs baseline':>11}")
    for name, seconds, out in rows:
        assert out.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and out.dtype == np.uint8
        print(f"{name:58} {seconds:8.3f} {NUM_FRAMES / seconds:9.1f} {base_s / seconds:10.2f}x")
    # the same frames are picked; pixels differ slightly (swscale area vs PIL bilinear)
    diff = np.abs(rows[0][2].astype(np.int16) - rows[2][2].astype(np.int16)).mean()
    print(f"mean |ours - baseline| per pixel: {diff:.2f} (of 255)")


if __name__ == "__main__":
    main()
