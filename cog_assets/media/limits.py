"""Limits that protect a shard from hostile or absurd files, with safe defaults.

Checked from the probe, before any decoding: a file over a limit is rejected with that
reason and the shard goes on. The decode timeout is enforced where decoding runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from cog_assets.media.errors import MediaError
from cog_assets.media.probe import VideoProbe


@dataclass(frozen=True)
class MediaLimits:
    max_pixels: int = 7680 * 4320  # 8K UHD per frame
    min_side: int = 16  # smaller than this holds no usable picture
    max_duration_s: float = 3 * 3600.0
    max_file_bytes: int = 64 << 30  # 64 GiB
    decode_timeout_s: float = 300.0

    def check_size(self, name: str, size_bytes: int | None) -> None:
        if size_bytes is not None and size_bytes > self.max_file_bytes:
            raise MediaError("file_too_large", f"{name} is {size_bytes / 2**30:.1f} GiB, over "
                             f"the limit of {self.max_file_bytes / 2**30:.1f} GiB")

    def check_probe(self, name: str, probe: VideoProbe) -> None:
        pixels = probe.coded_width * probe.coded_height
        if pixels > self.max_pixels:
            raise MediaError("too_large", f"{name} is {probe.coded_width}x{probe.coded_height}"
                             f" ({pixels} pixels per frame), over the limit of {self.max_pixels}")
        if min(probe.width, probe.height) < self.min_side:
            raise MediaError("too_small", f"{name} is {probe.width}x{probe.height}; the short "
                             f"side must be at least {self.min_side} pixels")
        if probe.duration_s is not None and probe.duration_s > self.max_duration_s:
            raise MediaError("too_long", f"{name} lasts {probe.duration_s:.0f} s, over the limit"
                             f" of {self.max_duration_s:.0f} s")
