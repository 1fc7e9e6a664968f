"""Tiny generated clips with checkable content, so tests and the demo run without real media.

Each frame has: a gradient background tinted by `seed`; a red marker in the
top-left corner (orientation check); the only pure-white pixels, a square moving
steadily right across the whole clip (motion check); and the frame index as an
8-bit grey code in a bottom strip (exact frame-pick check).
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["write_test_video", "make_frame", "read_frame_index", "INDEX_BITS"]

INDEX_BITS = 8
_ON, _OFF = 176, 16  # code cells stay well below the white square


def _layout(width: int, height: int) -> tuple[int, int, int]:
    """Marker side, square side, code-strip height for a frame size."""
    marker = max(4, min(width, height) // 6)
    return marker, marker, max(4, height // 8)


def make_frame(
    index: int, width: int = 160, height: int = 96, seed: int = 0, num_frames: int = 48
) -> np.ndarray:
    """RGB uint8 [height, width, 3] for frame `index` of `num_frames` (what the encoder is fed)."""
    marker, side, strip = _layout(width, height)
    hue = (seed * 0.618034) % 1.0
    base = np.array(colorsys.hsv_to_rgb(hue, 0.6, 1.0))
    ramp = 0.25 + 0.35 * np.linspace(0.0, 1.0, width)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = (ramp[None, :, None] * base[None, None, :] * 255).astype(np.uint8)
    img[:marker, :marker] = (255, 0, 0)
    y0 = (height - strip - side) // 2 + marker // 2
    x0 = round(index * (width - side) / max(1, num_frames - 1))
    img[y0 : y0 + side, x0 : x0 + side] = 255
    cell = width // INDEX_BITS
    for b in range(INDEX_BITS):
        img[height - strip :, b * cell : (b + 1) * cell] = _ON if (index >> b) & 1 else _OFF
    return img


def read_frame_index(rgb: np.ndarray) -> int:
    """Recover the frame index from a decoded frame at the coded size and orientation."""
    height, width = rgb.shape[:2]
    _, _, strip = _layout(width, height)
    cell = width // INDEX_BITS
    rows = rgb[height - strip + strip // 4 : height - strip // 4].astype(np.float32).mean(axis=2)
    mid = (_ON + _OFF) / 2
    bits = [rows[:, b * cell + cell // 4 : (b + 1) * cell - cell // 4].mean() > mid for b in range(INDEX_BITS)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def write_test_video(
    path: str | os.PathLike,
    *,
    width: int = 160,
    height: int = 96,
    fps: int = 24,
    seconds: float = 2.0,
    codec: str = "libx264",
    seed: int = 0,
    rotation: int = 0,
    frame_times: Sequence[float] | None = None,
) -> Path:
    """Encode a small yuv420p clip (creating parent folders); returns `path`.

    `rotation` (clockwise degrees, as in VideoProbe) is written as a display
    matrix, which the mp4/mov muxer stores. `frame_times` (seconds, ascending)
    overrides the regular `1/fps` grid to make a variable-frame-rate clip.
    """
    if width % 2 or height % 2 or width < 32 or height < 32:
        raise ValueError(f"width/height must be even and >= 32, got {width}x{height}")
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90, got {rotation}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if frame_times is None:
        frame_times = [i / fps for i in range(max(1, round(seconds * fps)))]
        time_base = Fraction(1, fps)  # one tick per frame: AVI stores one slot per tick
    else:
        time_base = Fraction(1, 1000 * fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        stream.gop_size = fps  # a keyframe a second, so seeking is exercised like real footage
        if codec in ("libx264", "libx265"):
            stream.options = {"preset": "ultrafast", "crf": "10"}
        else:
            stream.bit_rate = 4_000_000
        if rotation % 360:
            stream.set_display_rotation(-(rotation % 360))  # PyAV takes counter-clockwise
        for i, t in enumerate(frame_times):
            rgb = make_frame(i, width, height, seed, len(frame_times))
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_test_dataset(root: Path, count: int, *, seconds: float = 1.5, broken: bool = True) -> Path:
    """`count` generated clips in the two-file layout, plus one file that is not a video."""
    videos, prompts = [], []
    for i in range(count):
        name = f"clips/clip_{i:02d}.mp4"
        write_test_video(root / name, width=128 + 16 * (i % 3), height=96, fps=24,
                         seconds=seconds, seed=i)
        videos.append(name)
        prompts.append(f"a bright square moving across scene number {i}")
    if broken:
        (root / "clips").mkdir(parents=True, exist_ok=True)
        (root / "clips" / "garbage.mp4").write_bytes(b"\x00\x01 this is not a video " * 50)
        videos.append("clips/garbage.mp4")
        prompts.append("a file that cannot be decoded")
    (root / "videos.txt").write_text("\n".join(videos) + "\n")
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return root
