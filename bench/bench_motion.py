"""Where `min_motion` belongs: motion_score of moving corpus footage against the same footage
held still and encoded again, as an upload of a still image as a video is.

For each corpus video (COG_ASSETS_MEDIA or --media, `videos/`): SECONDS of it resampled to
320x180 at 25 fps (as the scene tests' shots) and encoded three ways (MPEG-4 part 2 at
FFmpeg's defaults, H.264 crf 18 and crf 35); then its first frame held for as long and encoded
the same three ways. Each file is scanned by `media.scan.scan_source` (what scene_segments
stores) and its motion_score is the mean of its samples, as a segment's is. Prints every
score, the largest still and the smallest moving score, and the threshold between them (their
geometric mean), the value `min_motion`'s documentation suggests.

    python bench/bench_motion.py [--media ../shared/media] [--seconds 3]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cog_assets.core.choices import ResizeMode, ShortClipPolicy, StartPolicy  # noqa: E402
from cog_assets.media.decode import FrameSpec, read_clip_frames  # noqa: E402
from cog_assets.media.probe import probe_video  # noqa: E402
from cog_assets.media.scan import ScanSpec, ScanTask, scan_source  # noqa: E402

FPS, WIDTH, HEIGHT = 25, 320, 180
ENCODINGS = {"mpeg4": ("mpeg4", {}),
             "x264-crf18": ("libx264", {"preset": "ultrafast", "crf": "18"}),
             "x264-crf35": ("libx264", {"preset": "ultrafast", "crf": "35"})}
# Corpus files whose own content hardly moves, so their "moving" version is no moving
# footage: three frames, held (decord's), a frame counter on a flat page, NASA's dark shot, a
# near-static 128x128 test clip. Scored and printed, left out of the moving side.
STATIC_CONTENT = {"decord__video_0.mov", "decord__video_90.mov", "mediabunny__frames.webm",
                  "torchcodec__nasa_13013.mp4", "torchcodec__var_fps_video.mp4"}


def footage(path: Path, seconds: float) -> np.ndarray | None:
    count = round(seconds * FPS)
    spec = FrameSpec(count, HEIGHT, WIDTH, FPS, StartPolicy.start, 0, ResizeMode.cover,
                     ShortClipPolicy.pad)
    try:
        return read_clip_frames(path, spec)
    except Exception as exc:  # noqa: BLE001 - a corpus file our decoder refuses: not scored
        print(f"  skipped {path.name}: {exc}", file=sys.stderr)
        return None


def encode(path: Path, frames: np.ndarray, codec: str, options: dict) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.time_base = Fraction(1, FPS)
        stream.options = options
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    return path


def motion_score(path: Path) -> float:
    probe = probe_video(path)
    scan = scan_source(ScanTask(str(path), probe.width, probe.height, probe.rotation, probe.fps,
                                ScanSpec(None)))
    motion = scan.samples[:, 4]
    return float(np.nanmean(motion))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", default=os.environ.get("COG_ASSETS_MEDIA"))
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if not args.media:
        sys.exit("give --media (or COG_ASSETS_MEDIA): the corpus folder with videos/")
    still, moving = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for source in sorted((Path(args.media) / "videos").iterdir()):
            frames = footage(source, args.seconds)
            if frames is None:
                continue
            held = np.repeat(frames[:1], len(frames), axis=0)
            for label, (codec, options) in ENCODINGS.items():
                for kind, pictures in (("moving", frames), ("still", held)):
                    score = motion_score(encode(Path(tmp) / f"{kind}.mp4", pictures, codec,
                                                options))
                    print(f"{source.name:44} {label:11} {kind:6} {score:.5f}", flush=True)
                    if kind == "still":
                        still.append(score)
                    elif source.name not in STATIC_CONTENT:
                        moving.append(score)
    top, bottom = max(still), min(moving)
    print(f"\nstill: at most {top:.5f}; moving: at least {bottom:.5f} "
          f"({len(still)} and {len(moving)} files)")
    if top < bottom:
        print(f"threshold between them (geometric mean): {math.sqrt(top * bottom):.4f}")
    else:
        print("the stills and the moving footage overlap: no threshold separates them")


if __name__ == "__main__":
    main()
