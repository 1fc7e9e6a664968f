"""Fit frames to a training size: "cover" (default) keeps aspect, scales until the target
is filled and crops the centre; never letterbox, because training frames must have no bars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cog_assets.core.choices import ResizeMode

__all__ = ["CoverGeometry", "cover_geometry", "resize_geometry", "resize_frames"]


@dataclass(frozen=True)
class CoverGeometry:
    scaled_width: int
    scaled_height: int
    crop_x: int
    crop_y: int


def cover_geometry(src_width: int, src_height: int, dst_width: int, dst_height: int) -> CoverGeometry:
    """Scaled size that covers dst with the source aspect, and the centred crop offset."""
    if min(src_width, src_height, dst_width, dst_height) <= 0:
        raise ValueError(
            f"sizes must be positive: src {src_width}x{src_height}, dst {dst_width}x{dst_height}"
        )
    scale = max(dst_width / src_width, dst_height / src_height)
    # Round up so the loose side never falls short; the slack absorbs float noise
    # (1920 * (720 / 1080) is 1280.0000000000002) and max() keeps the tight side exact.
    sw = max(dst_width, math.ceil(src_width * scale - 1e-6))
    sh = max(dst_height, math.ceil(src_height * scale - 1e-6))
    return CoverGeometry(sw, sh, (sw - dst_width) // 2, (sh - dst_height) // 2)


def resize_geometry(src_width: int, src_height: int, dst_width: int, dst_height: int,
                    mode: ResizeMode | str) -> CoverGeometry:
    """Scaled size and crop offset for a ResizeMode (see cog_assets.core.choices)."""
    mode = ResizeMode(mode)
    if mode == "cover":
        return cover_geometry(src_width, src_height, dst_width, dst_height)
    if mode == "stretch":
        return CoverGeometry(dst_width, dst_height, 0, 0)
    if mode == "crop":
        if src_width >= dst_width and src_height >= dst_height:
            return CoverGeometry(src_width, src_height, (src_width - dst_width) // 2,
                                 (src_height - dst_height) // 2)
        return cover_geometry(src_width, src_height, dst_width, dst_height)
    raise AssertionError(mode)


def resize_frames(
    frames: np.ndarray, height: int, width: int, mode: ResizeMode | str, *,
    interpolation: str = "bicubic", chunk: int = 16,
) -> np.ndarray:
    """uint8 [F,H,W,3] -> uint8 [F,height,width,3], antialiased scale then centre crop.

    The array fallback for frames already in memory (images, tests); `interpolation` is a
    torch mode; `chunk` bounds the float copy. (torch is imported here, not with the module:
    the decode and probe workers, which only need the geometry, start without it.)
    """
    import torch
    import torch.nn.functional as F

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 [F,H,W,3], got {frames.dtype} {frames.shape}")
    n, src_h, src_w, _ = frames.shape
    g = resize_geometry(src_w, src_h, width, height, mode)
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for lo in range(0, n, chunk):
        x = torch.from_numpy(np.ascontiguousarray(frames[lo : lo + chunk]))
        x = x.permute(0, 3, 1, 2).float()
        if (g.scaled_height, g.scaled_width) != (src_h, src_w):
            x = F.interpolate(
                x, size=(g.scaled_height, g.scaled_width), mode=interpolation,
                antialias=True, align_corners=False,
            )
        x = x[:, :, g.crop_y : g.crop_y + height, g.crop_x : g.crop_x + width]
        out[lo : lo + chunk] = x.round().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out
