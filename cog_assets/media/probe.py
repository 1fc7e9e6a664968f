"""Cheap per-clip metadata: what a viewer would see, from the headers alone.

The limits (pixels, duration) are checked on a first look at the headers before any frame of
a hostile file is decoded; the full probe then reads the display rotation from the stream's
side data and decodes the first frames (see probe_video). `cog_assets.media.probe_task` is
the picklable entry point the stages run in isolated workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from cog_assets.core.reasons import RejectReason

from .errors import MediaError
from .safe_open import FileStamp, display_rotation_ccw, open_media

__all__ = ["VideoProbe", "probe_video", "clockwise_rotation"]

# How far (degrees) a display matrix may be from a quarter turn and still count as one.
QUARTER_TURN_TOLERANCE = 1.0


@dataclass(frozen=True)
class VideoProbe:
    codec: str
    pix_fmt: str
    coded_width: int
    coded_height: int
    width: int  # display width: after sample-aspect-ratio correction and rotation
    height: int  # display height
    sar: float  # sample aspect ratio (1.0 when unset)
    rotation: int  # clockwise degrees a viewer rotates the coded frame: 0, 90, 180, 270
    fps: float  # average frame rate
    duration_s: float | None
    frame_count: int | None
    has_audio: bool


def clockwise_rotation(ccw_degrees: float) -> int:
    """Turn FFmpeg's display-matrix angle into clockwise degrees snapped to 0/90/180/270.

    FFmpeg reports the counter-clockwise angle the matrix applies; e.g. a phone portrait clip
    stores -90, which a viewer shows by turning the coded landscape frame 90 degrees
    clockwise.
    """
    return int(round(-ccw_degrees / 90.0)) % 4 * 90


def _rotation(container: av.container.InputContainer, stream: av.VideoStream, name: str) -> int:
    """The clip's clockwise quarter turn; a rotation that cannot be read, or that is no
    quarter turn, rejects the clip (`unknown_rotation`): assuming 0 would train on a phone's
    portrait clip lying on its side."""
    angle = display_rotation_ccw(container, stream.index)
    if angle is None:
        raise MediaError(RejectReason.unknown_rotation,
                         f"{name}: the display matrix of its video stream cannot be read")
    if abs(angle - 90.0 * round(angle / 90.0)) > QUARTER_TURN_TOLERANCE:
        raise MediaError(RejectReason.unknown_rotation,
                         f"{name}: the display matrix turns the picture by {angle:g} degrees, "
                         "not a quarter turn, so it cannot be shown upright")
    return clockwise_rotation(angle)


def display_size(coded_width: int, coded_height: int, sar: float, rotation: int) -> tuple[int, int]:
    """Width/height a viewer sees: stretch x by the SAR, then swap for quarter turns."""
    w = max(1, round(coded_width * sar))
    h = coded_height
    return (h, w) if rotation in (90, 270) else (w, h)


def _tag_seconds(value: str | None) -> float | None:
    """Matroska's per-track DURATION tag, "HH:MM:SS.nnnnnnnnn", in seconds."""
    try:
        h, m, sec = (value or "").split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None


def _video_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """The video track's own duration when stored; the container's (may include a longer
    audio track) only as a last resort, since decode treats data ending early as truncation."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tagged = _tag_seconds(stream.metadata.get("DURATION"))
    if tagged:
        return tagged
    return container.duration / av.time_base if container.duration else None


def probe_video(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
                expect: FileStamp | None = None,
                before_decoding: Callable[[VideoProbe], None] | None = None) -> VideoProbe:
    """Read the stream headers through `open_media` (a regular file inside `root`, a single-file
    container, unchanged since `expect` when given). FFmpeg's stream analysis decodes the first
    frames to fill in what headers omit (the pixel format); `before_decoding` (e.g. the size
    and duration limits) is called, and may raise, with a first probe that decoded nothing."""
    if before_decoding is not None:
        before_decoding(_read_probe(Path(path), root, expect, headers_only=True))
    return _read_probe(Path(path), root, expect, headers_only=False)


def _read_probe(p: Path, root: str | os.PathLike | None, expect: FileStamp | None,
                headers_only: bool) -> VideoProbe:
    with open_media(p, root=root, expect=expect, headers_only=headers_only) as container:
        if not container.streams.video:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise MediaError(RejectReason.no_video_stream, f"{p} has no video stream (streams: {kinds})")
        stream = container.streams.video[0]
        cc = stream.codec_context
        if cc is None or not cc.width or not cc.height:
            # e.g. an mp4 cut inside its index: the track exists but its codec setup does not
            raise MediaError(RejectReason.unreadable, f"{p}: the video stream has no usable codec "
                             "parameters (truncated or damaged file?)")
        sar = float(stream.sample_aspect_ratio or cc.sample_aspect_ratio or 1) or 1.0
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        duration = _video_duration(container, stream)
        has_audio = bool(container.streams.audio)
        rotation = _rotation(container, stream, p.name)
        width, height = display_size(cc.width, cc.height, sar, rotation)
        return VideoProbe(
            codec=cc.name,
            pix_fmt=cc.pix_fmt or "",
            coded_width=cc.width,
            coded_height=cc.height,
            width=width,
            height=height,
            sar=sar,
            rotation=rotation,
            fps=float(rate) if rate else 0.0,
            duration_s=duration,
            frame_count=stream.frames or None,
            has_audio=has_audio,
        )
