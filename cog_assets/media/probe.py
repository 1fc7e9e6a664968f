"""Cheap per-clip metadata: what a viewer would see, without decoding the clip."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av

from cog_assets.reasons import RejectReason

from .errors import MediaError

__all__ = ["VideoProbe", "probe_video", "clockwise_rotation"]


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

    FFmpeg (and PyAV's `VideoFrame.rotation`) report the counter-clockwise angle
    the matrix applies; e.g. a phone portrait clip stores -90, which a viewer shows
    by turning the coded landscape frame 90 degrees clockwise.
    """
    return int(round(-ccw_degrees / 90.0)) % 4 * 90


def display_size(coded_width: int, coded_height: int, sar: float, rotation: int) -> tuple[int, int]:
    """Width/height a viewer sees: stretch x by the SAR, then swap for quarter turns."""
    w = max(1, round(coded_width * sar))
    h = coded_height
    return (h, w) if rotation in (90, 270) else (w, h)


def _first_frame_rotation(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    # PyAV 18 cannot read stream-level side data, but FFmpeg copies the display
    # matrix onto every decoded frame; one frame is the cheap way to get it.
    try:
        for frame in container.decode(stream):
            return clockwise_rotation(frame.rotation)
    except (av.error.FFmpegError, ValueError):
        pass  # a broken first frame is decode's problem; probing stays lenient
    return 0


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


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Read stream headers (and at most the first frame, for rotation)."""
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise MediaError(RejectReason.empty_file, f"{p} has zero bytes")
    except OSError as e:
        raise MediaError(RejectReason.unreadable, f"cannot stat {p}: {e}") from e
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise MediaError(RejectReason.unreadable, f"PyAV cannot open {p}: {e}") from e
    with container:
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
        rotation = _first_frame_rotation(container, stream)
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
