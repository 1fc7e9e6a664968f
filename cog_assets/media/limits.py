"""Checks that protect a shard from hostile or absurd files (the limits are settings).

Checked from the file's size and its probe, before any decoding: a file over a limit is
rejected with that reason and the shard goes on. The decode timeout is enforced where
decoding runs (the worker pool).
"""

from __future__ import annotations

from cog_assets.core.config import MediaLimits
from cog_assets.core.reasons import RejectReason
from cog_assets.media.errors import MediaError
from cog_assets.media.probe import VideoProbe


def check_file_size(limits: MediaLimits, name: str, size_bytes: int | None) -> None:
    if size_bytes is not None and size_bytes > limits.max_file_bytes:
        raise MediaError(RejectReason.file_too_large,
                         f"{name} is {size_bytes / 2**30:.1f} GiB, over the limit of "
                         f"{limits.max_file_bytes / 2**30:.1f} GiB (max_file_bytes)")


def check_probe(limits: MediaLimits, name: str, probe: VideoProbe) -> None:
    pixels = probe.coded_width * probe.coded_height
    if pixels > limits.max_pixels:
        raise MediaError(RejectReason.too_large,
                         f"{name} is {probe.coded_width}x{probe.coded_height} ({pixels} pixels "
                         f"per frame), over the limit of {limits.max_pixels} (max_pixels)")
    if min(probe.width, probe.height) < limits.min_side:
        raise MediaError(RejectReason.too_small,
                         f"{name} is {probe.width}x{probe.height}; the short side must be at "
                         f"least {limits.min_side} pixels (min_side)")
    if probe.duration_s is not None and probe.duration_s > limits.max_duration_s:
        raise MediaError(RejectReason.too_long,
                         f"{name} lasts {probe.duration_s:.0f} s, over the limit of "
                         f"{limits.max_duration_s:.0f} s (max_duration_s)")
