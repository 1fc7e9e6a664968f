"""Cover resizing: keep the aspect ratio, scale to cover the target, crop the centre."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CoverGeometry:
    scaled_width: int
    scaled_height: int
    crop_x: int
    crop_y: int


def cover_geometry(src_width: int, src_height: int, dst_width: int, dst_height: int
                   ) -> CoverGeometry:
    """The scaled size that covers dst with the source's aspect, and the centred crop offset."""
    scale = max(dst_width / src_width, dst_height / src_height)
    width = max(dst_width, math.ceil(src_width * scale - 1e-6))
    height = max(dst_height, math.ceil(src_height * scale - 1e-6))
    return CoverGeometry(width, height, (width - dst_width) // 2, (height - dst_height) // 2)


RESIZE_MODES = ("cover", "stretch", "crop")


def resize_geometry(mode: str, src_width: int, src_height: int, dst_width: int,
                    dst_height: int) -> CoverGeometry:
    """`cover`: keep aspect, scale to cover, centre crop. `stretch`: scale to the target,
    aspect ignored. `crop`: centre crop at the source's scale, falling back to cover when
    the source is smaller than the target."""
    if mode == "stretch":
        return CoverGeometry(dst_width, dst_height, 0, 0)
    if mode == "crop" and src_width >= dst_width and src_height >= dst_height:
        return CoverGeometry(src_width, src_height, (src_width - dst_width) // 2,
                             (src_height - dst_height) // 2)
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    return cover_geometry(src_width, src_height, dst_width, dst_height)


def resize_cover(frames: np.ndarray, height: int, width: int, mode: str = "cover"
                 ) -> np.ndarray:
    """uint8 [F, H, W, 3] -> uint8 [F, height, width, 3], antialiased; the array path for
    images and frames already in memory (the decoder itself scales with libswscale)."""
    geometry = resize_geometry(mode, frames.shape[2], frames.shape[1], width, height)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(geometry.scaled_height, geometry.scaled_width), mode="bilinear",
                      antialias=True, align_corners=False)
    x = x[:, :, geometry.crop_y:geometry.crop_y + height, geometry.crop_x:geometry.crop_x + width]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
