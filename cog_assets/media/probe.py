"""What a video is, as a viewer would see it, without decoding more than its first frame."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import av

from cog_assets.media.errors import MediaError


@dataclass(frozen=True)
class VideoProbe:
    codec: str
    pix_fmt: str
    coded_width: int
    coded_height: int
    width: int  # display width: after sample-aspect-ratio correction and rotation
    height: int  # display height
    sar: float  # sample aspect ratio, 1.0 when unset
    rotation: int  # clockwise degrees a viewer turns the coded frame: 0, 90, 180, 270
    fps: float  # average frame rate
    duration_s: float | None
    frame_count: int | None
    has_audio: bool

    def as_row(self) -> dict:
        return asdict(self)


def clockwise_rotation(frame: av.VideoFrame) -> int:
    """PyAV's `rotation` is the display matrix's counter-clockwise angle; players turn the
    picture the other way (FFmpeg's autorotate), so -90 means a quarter turn clockwise."""
    return int(round(-(frame.rotation or 0) / 90.0)) * 90 % 360


def display_size(coded_width: int, coded_height: int, sar: float, rotation: int
                 ) -> tuple[int, int]:
    width = max(1, round(coded_width * sar))
    return (coded_height, width) if rotation in (90, 270) else (width, coded_height)


def open_video(path: str | os.PathLike) -> av.container.InputContainer:
    """av.open with our reasons: empty file, unreadable container."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise MediaError("empty_file", f"{path.name} is empty (0 bytes)")
    except FileNotFoundError:
        raise MediaError("missing_file", f"{path} does not exist") from None
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError("unreadable", f"{path.name} cannot be opened as a video: {exc}") from None


def stream_duration(container: av.container.InputContainer, stream: av.VideoStream
                    ) -> float | None:
    """Duration from the stream, else the container; None when neither says (no guessing)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def probe_video(path: str | os.PathLike) -> VideoProbe:
    container = open_video(path)
    with container:
        if not container.streams.video:
            raise MediaError("no_video_stream", f"{Path(path).name} has no video stream"
                             f" ({len(container.streams.audio)} audio streams)")
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream))
        except StopIteration:
            raise MediaError("decode_error", f"{Path(path).name}: no frame could be decoded"
                             ) from None
        except av.FFmpegError as exc:
            raise MediaError("decode_error", f"{Path(path).name}: decode error at frame 0: "
                             f"{exc}") from None
        sar = float(stream.sample_aspect_ratio) if stream.sample_aspect_ratio else 1.0
        rotation = clockwise_rotation(first)
        width, height = display_size(first.width, first.height, sar, rotation)
        rate = stream.average_rate or stream.guessed_rate
        return VideoProbe(
            codec=stream.codec_context.name, pix_fmt=first.format.name,
            coded_width=first.width, coded_height=first.height, width=width, height=height,
            sar=sar, rotation=rotation, fps=float(rate) if rate else 0.0,
            duration_s=stream_duration(container, stream), frame_count=stream.frames or None,
            has_audio=bool(container.streams.audio),
        )
