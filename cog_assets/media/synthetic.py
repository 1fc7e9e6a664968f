"""Small generated videos with moving content, for the demo and the tests.

Each frame has a seed-dependent gradient, a white square moving left to right and a red
marker in the top-left corner, so a test can tell frames apart and check orientation.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def synthetic_frame(index: int, count: int, width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=3)
    ys = np.linspace(0, 1, height)[:, None]
    xs = np.linspace(0, 1, width)[None, :]
    img = np.empty((height, width, 3), dtype=np.float32)
    img[..., 0] = base[0] * (0.6 + 0.4 * xs)
    img[..., 1] = base[1] * (0.6 + 0.4 * ys)
    img[..., 2] = base[2] * (1.0 - 0.3 * xs * ys)
    size = max(4, min(width, height) // 4)
    x = int((width - size) * index / max(count - 1, 1))
    y = (height - size) // 2
    img[y:y + size, x:x + size] = 255
    marker = max(2, min(width, height) // 8)
    img[:marker, :marker] = (255, 0, 0)
    return img.astype(np.uint8)


def write_test_video(path: str | os.PathLike, *, width: int = 160, height: int = 96,
                     fps: int = 24, seconds: float = 2.0, codec: str = "libx264", seed: int = 0,
                     pix_fmt: str = "yuv420p") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = max(1, round(seconds * fps))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, count, width, height, seed),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
