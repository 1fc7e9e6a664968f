"""Decode exactly the frames a training sample needs, as a viewer would see them.

Frames are chosen by presentation time (VFR-safe), scaled in uint8 by libswscale
straight from the decoder's pixel format (10-bit, 4:4:4 and alpha sources included),
so no full-resolution float copy ever exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from cog_assets.core.choices import ResizeMode, ShortClipPolicy, StartPolicy
from cog_assets.core.reasons import RejectReason

from .errors import MediaError
from .probe import VideoProbe, probe_video
from .resize import resize_geometry
from .safe_open import FileStamp, open_media
from .sampling import PTS_EPSILON_S, sample_timestamps, select_streaming

__all__ = ["FrameSpec", "ClipTask", "read_clip_frames", "half_frame", "decode_clip_task",
           "segment_sampling_span", "read_window_frames", "spread_times", "fit_longest_side"]


@dataclass(frozen=True)
class FrameSpec:
    """Everything besides its bytes that decides one clip's frames (part of their key)."""

    num_frames: int
    height: int
    width: int
    fps: float
    start: StartPolicy
    seed: int
    resize: ResizeMode
    short_clips: ShortClipPolicy
    i2v: bool = False  # I2V also keeps the clean first frame (or the supplied image)


def half_frame(probe: VideoProbe) -> float:
    """Duration tolerance: half a source frame, the rounding containers apply to durations."""
    return 0.5 / probe.fps if probe.fps > 0 else 0.0


class _Overshot(Exception):
    """The seek landed after the first wanted time; decode from the start instead."""


@contextmanager
def _open_video(
    path: str | os.PathLike, threads: int = 0, root: str | os.PathLike | None = None,
    expect: FileStamp | None = None,
) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    with open_media(path, root=root, expect=expect) as container:
        if not container.streams.video:
            raise MediaError(RejectReason.no_video_stream, f"{path} has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise MediaError(RejectReason.unreadable, f"{path}: the video stream has no usable codec parameters")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads  # 0: FFmpeg picks
        yield container, stream


def _origin(stream: av.VideoStream) -> float | None:
    """Stream start in seconds: times are relative to it so edit lists / offsets cancel."""
    if stream.start_time is None:
        return None
    return float(stream.start_time * stream.time_base)


def _scan_duration(path: str | os.PathLike, fallback_fps: float,
                   root: str | os.PathLike | None = None, expect: FileStamp | None = None
                   ) -> float:
    """Duration when headers lack it: end of the last packet (demux only, no decoding)."""
    with _open_video(path, root=root, expect=expect) as (container, stream):
        tb = stream.time_base
        first = end = None
        try:
            for pkt in container.demux(stream):
                if pkt.pts is None:
                    continue
                t = float(pkt.pts * tb)
                step = float(pkt.duration * tb) if pkt.duration else 1.0 / (fallback_fps or 25.0)
                first = t if first is None else min(first, t)
                end = t + step if end is None else max(end, t + step)
        except av.error.FFmpegError as e:
            raise MediaError(RejectReason.decode_error, f"cannot read packets to find the duration: {e}") from e
        if end is None:
            raise MediaError(RejectReason.decode_error, f"{path}: no timestamped video packets")
        origin = _origin(stream)
        return end - (first if origin is None else origin)


def _converter(
    probe: VideoProbe, height: int, width: int, resize: ResizeMode
) -> Callable[[av.VideoFrame], np.ndarray]:
    """Frame -> uint8 [height, width, 3]: non-uniform scale (SAR), rotate, centre crop."""
    g = resize_geometry(probe.width, probe.height, width, height, resize)
    quarter = probe.rotation // 90 % 4
    # Scale the coded frame to the size that becomes (scaled_w, scaled_h) once rotated.
    pre_w, pre_h = (g.scaled_height, g.scaled_width) if quarter % 2 else (g.scaled_width, g.scaled_height)
    reformatter = VideoReformatter()  # reuses one swscale context across frames

    def convert(frame: av.VideoFrame) -> np.ndarray:
        down = frame.width * frame.height > pre_w * pre_h
        rgb = reformatter.reformat(
            frame, width=pre_w, height=pre_h, format="rgb24",
            interpolation=Interpolation.AREA if down else Interpolation.BICUBIC,
        ).to_ndarray()
        if quarter:
            rgb = np.rot90(rgb, k=-quarter)  # negative k turns clockwise
        return rgb[g.crop_y : g.crop_y + height, g.crop_x : g.crop_x + width]

    return convert


def _decode_into(
    path: str | os.PathLike,
    out: np.ndarray,
    wanted: list[float],
    convert: Callable[[av.VideoFrame], np.ndarray],
    fps_hint: float,
    tolerance_s: float,
    seek: bool,
    threads: int,
    root: str | os.PathLike | None = None,
    expect: FileStamp | None = None,
) -> None:
    with _open_video(path, threads, root, expect) as (container, stream):
        origin = _origin(stream)
        seeked = seek and origin is not None and wanted[0] > 0
        if seeked:
            container.seek(stream.start_time + int(wanted[0] / stream.time_base), stream=stream, backward=True)
        filled = np.zeros(len(wanted), dtype=bool)
        state = {"count": 0, "time": None, "frame": None, "step": 1.0 / (fps_hint or 25.0),
                 "eof": False}

        def shown_by_last(k: int) -> bool:
            """Does wanted[k] fall inside the last decoded frame's display interval?"""
            if state["frame"] is None:
                return False
            return wanted[k] < state["time"] + state["step"] + tolerance_s + PTS_EPSILON_S

        def timed() -> Iterator[tuple[float, av.VideoFrame]]:
            nonlocal origin
            for frame in container.decode(stream):
                if frame.time is None:  # no pts: continue the grid from the previous frame
                    t = (state["time"] or 0.0) + state["step"] if state["count"] else 0.0
                else:
                    if origin is None:
                        origin = frame.time
                    t = frame.time - origin
                if seeked and state["count"] == 0 and t > wanted[0] + PTS_EPSILON_S:
                    raise _Overshot
                if frame.duration:
                    state["step"] = float(frame.duration * stream.time_base)
                state.update(time=t, frame=frame)
                state["count"] += 1
                yield t, frame
            state["eof"] = True

        try:
            for idxs, frame in select_streaming(timed(), wanted):
                if state["eof"] and not shown_by_last(idxs[-1]):
                    # The header promised more than the data holds: never invent frames.
                    raise MediaError(
                        RejectReason.truncated,
                        f"{path}: video data ends at {state['time'] + state['step']:.3f} s but "
                        f"the window needs a frame at {wanted[idxs[-1]]:.3f} s (file cut short?)",
                    )
                out[idxs] = convert(frame)
                filled[idxs] = True
        except av.error.FFmpegError as e:
            # Wanted times inside the last good frame's interval still have their frame.
            rest = np.flatnonzero(~filled)
            if state["frame"] is not None and all(shown_by_last(k) for k in rest):
                if len(rest):
                    out[rest] = convert(state["frame"])
                return
            where = f" counting from the keyframe before {wanted[0]:.3f}s" if seeked else ""
            raise MediaError(
                RejectReason.decode_error, f"decode error at frame {state['count']}{where} of {path}: {e}"
            ) from e
        if state["count"] == 0:
            raise MediaError(RejectReason.decode_error, f"{path}: no video frames could be decoded")


def segment_sampling_span(start_s: float, end_s: float) -> float:
    """How long a segment is for sampling: a little short of its end, so that no sampled
    time picks the first frame of the next scene (frames are picked within PTS_EPSILON_S)."""
    return max(0.0, end_s - start_s - 2 * PTS_EPSILON_S)


def read_clip_frames(path: str | os.PathLike, spec: FrameSpec, *,
                     probe: VideoProbe | None = None, threads: int = 0,
                     segment: tuple[float, float] | None = None,
                     root: str | os.PathLike | None = None,
                     expect: FileStamp | None = None) -> np.ndarray:
    """uint8 RGB [num_frames, height, width, 3] sampled at `spec.fps`, resized per spec.

    Seeks to the keyframe before the window, decodes until the last wanted frame
    is settled, and converts only frames that are picked. Durations get half a
    source frame of tolerance; `threads` is the decoder's thread count (0: FFmpeg's
    choice). `segment` (start_s, end_s) samples inside that stretch of the source only
    (a scene of a long video), with no tolerance past its end. The file is opened by
    `open_media` (a regular file inside `root`, a single-file container, unchanged since
    `expect`). Raises MediaError; a file whose data ends before the window does
    ("truncated") is never padded with copies.
    """
    probe = probe or probe_video(path, root=root, expect=expect)
    if segment is not None:
        start_s, end_s = segment
        wanted = [start_s + t for t in sample_timestamps(
            segment_sampling_span(start_s, end_s), spec.num_frames, spec.fps, spec.start,
            spec.seed, short_clips=spec.short_clips)]
    else:
        duration = probe.duration_s
        if duration is None:
            duration = _scan_duration(path, probe.fps, root, expect)
        wanted = sample_timestamps(duration, spec.num_frames, spec.fps, spec.start, spec.seed,
                                   short_clips=spec.short_clips, tolerance_s=half_frame(probe))
    convert = _converter(probe, spec.height, spec.width, spec.resize)
    out = np.empty((spec.num_frames, spec.height, spec.width, 3), dtype=np.uint8)
    args = (path, out, wanted, convert, probe.fps, half_frame(probe))
    try:
        _decode_into(*args, seek=True, threads=threads, root=root, expect=expect)
    except _Overshot:
        _decode_into(*args, seek=False, threads=threads, root=root, expect=expect)
    return out


def spread_times(start_s: float, span_s: float, count: int) -> list[float]:
    """`count` instants spread evenly over [start_s, start_s + span_s]: the middle of each of
    `count` equal parts (one frame: the middle of the window), never its first or last frame,
    where a cut or a fade usually is."""
    return [start_s + span_s * (i + 0.5) / count for i in range(count)]


def fit_longest_side(width: int, height: int, longest: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is at most `longest`, aspect kept, even sides."""
    scale = min(1.0, longest / max(width, height))
    return (max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2))


def read_window_frames(path: str | os.PathLike, count: int, longest_side: int, *,
                       segment: tuple[float, float] | None = None, threads: int = 0,
                       root: str | os.PathLike | None = None,
                       expect: FileStamp | None = None) -> np.ndarray:
    """uint8 RGB [count, h, w, 3]: the frames shown at `spread_times` over the clip's window
    (`segment` of the source, or the whole file), upright and square-pixelled as a viewer sees
    them, whole (never cropped) and scaled down so the longest side is `longest_side`. What a
    captioner is shown: opened and decoded exactly as training frames are (`open_media`)."""
    probe = probe_video(path, root=root, expect=expect)
    if segment is not None:
        start_s, span_s = segment[0], segment_sampling_span(*segment)
    else:
        duration = probe.duration_s
        if duration is None:
            duration = _scan_duration(path, probe.fps, root, expect)
        start_s, span_s = 0.0, max(0.0, duration)
    width, height = fit_longest_side(probe.width, probe.height, longest_side)
    convert = _converter(probe, height, width, ResizeMode.stretch)
    out = np.empty((count, height, width, 3), dtype=np.uint8)
    args = (path, out, spread_times(start_s, span_s, count), convert, probe.fps, half_frame(probe))
    try:
        _decode_into(*args, seek=True, threads=threads, root=root, expect=expect)
    except _Overshot:
        _decode_into(*args, seek=False, threads=threads, root=root, expect=expect)
    return out


@dataclass(frozen=True)
class ClipTask:
    """One clip's decode job as plain picklable data, for worker processes."""

    path: str
    spec: FrameSpec
    image_path: str | None = None  # I2V: a supplied still replaces the clip's first frame
    threads: int = 0
    segment: tuple[float, float] | None = None  # (start_s, end_s) of a scene; None: the file
    root: str | None = None  # the data root nothing may be read from outside of
    stamp: str | None = None  # FileStamp.text() of the video when it was hashed


def decode_clip_task(task: ClipTask) -> dict[str, np.ndarray]:
    """{"frames": [F,H,W,3]} plus, for I2V, {"first_frame": [H,W,3]} (the supplied image if any)."""
    spec = task.spec
    frames = read_clip_frames(task.path, spec, threads=task.threads, segment=task.segment,
                              root=task.root, expect=FileStamp.parse(task.stamp))
    out = {"frames": frames}
    if spec.i2v:
        if task.image_path:
            from .image import read_image  # PIL only where images are used

            out["first_frame"] = read_image(task.image_path, spec.height, spec.width,
                                            spec.resize, root=task.root)
        else:
            out["first_frame"] = frames[0].copy()
    return out
