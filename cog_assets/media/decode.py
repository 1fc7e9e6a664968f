"""Reading a clip's sampled frames as a viewer sees them, doing only the work needed.

Seek near the window, decode (threaded) until the last wanted time, and convert only the
frames picked: each is scaled in uint8 by libswscale straight to its cover size (the sample
aspect ratio folded into the scale), turned by the display matrix, then centre-cropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from cog_assets.media.errors import MediaError
from cog_assets.media.probe import VideoProbe, open_video, probe_video
from cog_assets.media.resize import resize_geometry
from cog_assets.media.sampling import EPSILON, sample_timestamps

SEEK_MARGIN_S = 1.0  # decoding from a keyframe this far before the window is cheaper than seeking wrong
INTERPOLATION = "AREA"  # swscale's area filter: antialiased when shrinking


class FrameConverter:
    """Coded frame -> uint8 RGB [H, W, 3] at the target size, rotation and SAR applied."""

    def __init__(self, probe: VideoProbe, height: int, width: int, resize: str = "cover"):
        geometry = resize_geometry(resize, probe.width, probe.height, width, height)
        self.rotation = probe.rotation
        self.crop = (geometry.crop_y, geometry.crop_x, height, width)
        if probe.rotation in (90, 270):  # scale in coded orientation, then turn
            self.scaled = (geometry.scaled_height, geometry.scaled_width)
        else:
            self.scaled = (geometry.scaled_width, geometry.scaled_height)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.reformat(width=self.scaled[0], height=self.scaled[1], format="rgb24",
                             interpolation=INTERPOLATION).to_ndarray()
        if self.rotation:
            rgb = np.rot90(rgb, k=-(self.rotation // 90))  # negative k: clockwise
        y, x, h, w = self.crop
        return np.ascontiguousarray(rgb[y:y + h, x:x + w])


def half_frame(probe: VideoProbe) -> float:
    """Rounding slack for durations and the last frame's end: half a source frame."""
    return 0.5 / probe.fps if probe.fps else 0.0


def _frame_times(container: av.container.InputContainer, stream: av.VideoStream) -> list[float]:
    """Presentation times of every frame, by decoding: for containers that state no duration."""
    times = []
    for frame in container.decode(stream):
        if frame.time is not None:
            times.append(frame.time)
    return times


def read_clip_frames(path: str | os.PathLike, *, num_frames: int, fps: float, height: int,
                     width: int, start: str = "start", seed: int = 0,
                     probe: VideoProbe | None = None, resize: str = "cover",
                     short_clips: str = "reject") -> np.ndarray:
    """uint8 [num_frames, height, width, 3]: frames at `fps` from the window `start` picks
    (see sample_timestamps for `short_clips`, resize_geometry for `resize`)."""
    path = Path(path)
    probe = probe or probe_video(path)
    convert = FrameConverter(probe, height, width, resize)
    container = open_video(path)
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        duration = probe.duration_s
        if duration is None:  # no metadata: decode once to learn how long it really is
            times = _frame_times(container, stream)
            if not times:
                raise MediaError("decode_error", f"{path.name}: no frame could be decoded")
            step = 1.0 / probe.fps if probe.fps else 0.0
            duration = times[-1] - t0 + step
            container.seek(0, stream=stream, backward=True)
        wanted = sample_timestamps(duration, num_frames, fps, start, seed,
                                   tolerance_s=half_frame(probe), short_clips=short_clips)
        return _decode_window(container, stream, convert, wanted, t0, probe, path)


def _decode_window(container, stream, convert: FrameConverter, wanted: list[float], t0: float,
                   probe: VideoProbe, path: Path) -> np.ndarray:
    if wanted[0] > SEEK_MARGIN_S:
        target = int((wanted[0] + t0 - SEEK_MARGIN_S) / stream.time_base)
        container.seek(target, stream=stream, backward=True, any_frame=False)
    out: list[np.ndarray] = []
    prev: av.VideoFrame | None = None
    prev_rgb: np.ndarray | None = None
    index = -1
    try:
        for index, frame in enumerate(container.decode(stream)):
            if frame.time is None:
                continue
            t = frame.time - t0
            while len(out) < len(wanted) and wanted[len(out)] < t - EPSILON:
                if prev is None:  # the window starts before the first frame: show the first
                    prev, prev_rgb = frame, None
                if prev_rgb is None:
                    prev_rgb = convert(prev)
                out.append(prev_rgb)
            if len(out) == len(wanted):
                break
            prev, prev_rgb = frame, None
    except av.FFmpegError as exc:
        if len(out) < len(wanted):
            raise MediaError("decode_error", f"{path.name}: decode error at frame {index + 1} "
                             f"({len(out)} of {len(wanted)} sampled frames read): {exc}"
                             ) from None
    if len(out) < len(wanted) and prev is not None:
        # End of stream: the last frame stays on screen for one frame duration.
        last_end = prev.time - t0 + (1.0 / probe.fps if probe.fps else 0.0)
        rgb = convert(prev) if prev_rgb is None else prev_rgb
        while len(out) < len(wanted) and wanted[len(out)] < last_end + half_frame(probe):
            out.append(rgb)
    if len(out) < len(wanted):
        shown = 0.0 if prev is None else prev.time - t0
        raise MediaError("too_short", f"{path.name}: stream ends at {shown:.3f} s, the window "
                         f"needs a frame at {wanted[len(out)]:.3f} s")
    return np.stack(out)
