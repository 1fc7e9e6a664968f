"""Per-frame quality measures on small greyscale frames, with OpenCV.

The values depend on the frame's size, so they are always taken on the scan's analysis
frame (`scan.ANALYSIS_SIDE` pixels on the long side; optical flow at FLOW_SIDE) and are
comparable across sources.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["brightness", "sharpness", "flow_speed"]


def brightness(gray: np.ndarray) -> float:
    """Mean luma, 0 (black) to 1 (white)."""
    return float(gray.mean()) / 255.0


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian: high where edges are crisp, low on blur and flat frames."""
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


FLOW_SIDE = 128  # optical flow runs at this long side: 4x cheaper than 256, same speeds


def _for_flow(gray: np.ndarray) -> np.ndarray:
    height, width = gray.shape
    scale = FLOW_SIDE / max(height, width)
    if scale >= 1:
        return gray
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


# Grey levels (0-255, after a 5x5 blur) a pixel must have changed by since the reference
# frame to count as moving. Compression noise of a re-encoded still (MPEG-4's refreshed
# quantisation noise at each key frame, x264's flicker) stays within a few levels and does not
# grow with time; real motion does. Tuned on the corpus (bench/README.md, "Motion score").
NOISE_LEVELS = 5


def flow_speed(previous: np.ndarray, current: np.ndarray, seconds: float,
               reference: np.ndarray | None = None) -> float:
    """Mean Farneback optical-flow magnitude between two frames `seconds` apart, in frame
    lengths (the long side) per second: 0.1 is a pan across a tenth of the frame per second.
    Measured on the frames scaled to FLOW_SIDE pixels on their long side.

    Farneback reads motion into flat regions and compression noise, even between two
    identical frames; so with a `reference` (a frame some time before `current`: the scan's
    previous sample, half a second earlier) only pixels that changed since it by more than
    NOISE_LEVELS count, the rest as still. A still image encoded as a video reads as ~0, a
    slow pan still counts: its change accumulates over the half second, noise does not."""
    if not seconds > 0:
        return float("nan")
    previous, current = _for_flow(previous), _for_flow(current)
    flow = cv2.calcOpticalFlowFarneback(previous, current, None, pyr_scale=0.5, levels=3,
                                        winsize=15, iterations=3, poly_n=5, poly_sigma=1.2,
                                        flags=0)
    magnitude = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)
    if reference is not None:
        changed = cv2.GaussianBlur(cv2.absdiff(_for_flow(reference), current), (5, 5), 0)
        magnitude = magnitude * (changed > NOISE_LEVELS)
    return float(magnitude.mean()) / max(previous.shape) / seconds
