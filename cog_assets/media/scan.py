"""One pass over a whole source video: where its scenes change and how each moment scores.

PySceneDetect's detectors find the cuts. They are fed frames decoded here, through the same
opening code as clip decoding, timed by presentation timestamp and scaled by libswscale to a
small analysis frame, rather than through PySceneDetect's own video backends: one decode then
gives both the cut list and the quality samples, and cut times stay exact on
variable-frame-rate sources.

Quality is sampled SCORE_FPS times per second of source time: brightness, sharpness and
motion (optical flow from the frame before the sample, counted only where the picture changed
beyond compression noise since the previous sample) on the analysis frame and, with
aesthetic weights, the aesthetic score of the sample. Segments are scored later from these
samples (`cog_assets.media.scene_cuts`), so changing clip lengths or thresholds needs no decoding.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from cog_assets.core.choices import SceneDetectorKind
from cog_assets.core.reasons import RejectReason

from . import quality
from .decode import _open_video, _origin
from .errors import MediaError
from .safe_open import FileStamp
from .sampling import PTS_EPSILON_S

if TYPE_CHECKING:  # scenedetect (0.2 s of imports) is loaded only where a scan detects cuts
    from scenedetect.scene_detector import SceneDetector

__all__ = ["ScanSpec", "ScanTask", "SourceScan", "SAMPLE_COLUMNS", "scan_source"]

ANALYSIS_SIDE = 256  # long side of the analysis frame (PySceneDetect's own default width)
SCORE_FPS = 2.0  # quality samples per second of source time
MIN_SCENE_S = 0.5  # no two cuts closer than this (PySceneDetect's 15 frames at 30 fps)
AESTHETIC_SIDE = 224  # short side of the image the aesthetic model is shown (CLIP's input)
AESTHETIC_BATCH = 16
DEFAULT_THRESHOLDS = {SceneDetectorKind.adaptive: 3.0, SceneDetectorKind.content: 27.0}

# columns of SourceScan.samples
SAMPLE_COLUMNS = ("time_s", "prev_time_s", "brightness", "sharpness", "motion", "aesthetic")


@dataclass(frozen=True)
class ScanSpec:
    """Everything besides the video's bytes that decides a scan's output (part of its key)."""

    detector: SceneDetectorKind | None  # None: no cut detection, quality samples only
    threshold: float | None = None  # None: the detector's default
    aesthetic_dir: str | None = None  # CLIP + MLP head weights; None: no aesthetic score

    @property
    def detector_threshold(self) -> float | None:
        if self.detector is None:
            return None
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.detector]

    def key_parts(self, aesthetic_identity: str | None) -> dict:
        return {"detector": self.detector, "threshold": self.detector_threshold,
                "min_scene_s": MIN_SCENE_S, "analysis_side": ANALYSIS_SIDE,
                "score_fps": SCORE_FPS, "flow_side": quality.FLOW_SIDE,
                "aesthetic": aesthetic_identity}


@dataclass(frozen=True)
class ScanTask:
    """One source's scan as plain picklable data, for worker processes."""

    path: str
    width: int  # display size, from the probe (SAR and rotation applied)
    height: int
    rotation: int  # clockwise degrees
    fps: float  # average frame rate (sets the detector's minimum scene length in frames)
    spec: ScanSpec
    threads: int = 0  # the decoder's threads (0: FFmpeg's choice)
    time_limit_s: float | None = None  # the worker pool stops a scan that takes longer
    root: str | None = None  # the data root nothing may be read from outside of
    stamp: str | None = None  # FileStamp.text() of the video when it was hashed


@dataclass
class SourceScan:
    """What a scan found: cut times, quality samples and where the video data ends."""

    cuts: np.ndarray  # float64 [n]: start time of each new scene, seconds from stream start
    samples: np.ndarray  # float64 [k, len(SAMPLE_COLUMNS)]; NaN: not measured
    end_s: float  # end of the last frame shown
    frames: int  # frames decoded
    # where packets failed to decode (s from stream start)
    decode_errors: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _analysis_size(width: int, height: int, side: int) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height))
    return max(8, round(width * scale)), max(8, round(height * scale))


def _detector(spec: ScanSpec, fps: float) -> SceneDetector | None:
    from scenedetect import AdaptiveDetector, ContentDetector

    min_scene_len = max(1, round(MIN_SCENE_S * (fps if fps > 0 else 25.0)))
    if spec.detector == SceneDetectorKind.adaptive:
        return AdaptiveDetector(adaptive_threshold=spec.detector_threshold,
                                min_scene_len=min_scene_len)
    if spec.detector == SceneDetectorKind.content:
        return ContentDetector(threshold=spec.detector_threshold, min_scene_len=min_scene_len)
    return None


class _Oriented:
    """Decoded frame -> array of the display's orientation at a given size, via libswscale."""

    def __init__(self, task: ScanTask, width: int, height: int, fmt: str):
        self.quarter = task.rotation // 90 % 4
        self.size = (height, width) if self.quarter % 2 else (width, height)
        self.fmt = fmt
        self.reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        array = self.reformatter.reformat(frame, width=self.size[0], height=self.size[1],
                                          format=self.fmt,
                                          interpolation=Interpolation.AREA).to_ndarray()
        if self.quarter:
            array = np.ascontiguousarray(np.rot90(array, k=-self.quarter))
        return array


@functools.lru_cache(maxsize=1)
def _aesthetic_scorer(directory: str):
    from cog_assets.models.aesthetic import (
        AestheticScorer,  # torch only where it is used
    )

    return AestheticScorer(directory)


class _Decoded:
    """Frames of a whole stream in presentation order, timed from the stream start.

    Packets are decoded one by one so that an isolated corrupt packet costs only its frames
    (as PySceneDetect's own PyAV backend does): its time is recorded in `errors` and decoding
    goes on; more than MAX_CONSECUTIVE_ERRORS in a row ends the scan with decode_error. The
    clips later cut around such a spot are decoded again, and judged, one by one."""

    MAX_CONSECUTIVE_ERRORS = 8

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream,
                 fps: float, path: str):
        self.container, self.stream, self.path = container, stream, path
        self.step = 1.0 / (fps if fps > 0 else 25.0)
        self.errors: list[float] = []  # times (s) near which a packet failed to decode
        self.count = 0
        self.last: float | None = None

    def __iter__(self) -> Iterator[tuple[float, float, av.VideoFrame]]:
        """(time from stream start, shown-for seconds, frame)."""
        origin = _origin(self.stream)
        tb = self.stream.time_base
        failures = 0
        for packet in self.container.demux(self.stream):
            try:
                frames = packet.decode()  # the final empty packet flushes the decoder
            except av.error.FFmpegError as e:
                failures += 1
                near = (self.last or 0.0) if packet.pts is None or origin is None else (
                    float(packet.pts * tb) - origin)
                self.errors.append(near)
                if failures > self.MAX_CONSECUTIVE_ERRORS:
                    raise MediaError(RejectReason.decode_error, (
                        f"{self.path}: {failures} packets in a row failed to decode after "
                        f"frame {self.count} ({near:.3f} s): {e}")) from e
                continue
            failures = 0
            for frame in frames:
                if frame.time is None:  # no pts: continue the grid from the previous frame
                    t = 0.0 if self.last is None else self.last + self.step
                else:
                    if origin is None:
                        origin = frame.time
                    t = frame.time - origin
                if frame.duration:
                    self.step = float(frame.duration * tb)
                self.last = t
                self.count += 1
                yield t, self.step, frame


def scan_source(task: ScanTask) -> SourceScan:
    """Decode every frame of `task.path` once; return its cuts and quality samples.

    A packet that fails to decode is skipped and its time kept in `decode_errors`; many in a
    row, a failing read, or no frame at all raise MediaError(decode_error) naming where."""
    spec = task.spec
    aw, ah = _analysis_size(task.width, task.height, ANALYSIS_SIDE)
    small = _Oriented(task, aw, ah, "bgr24")
    detector = _detector(spec, task.fps)
    scorer = _aesthetic_scorer(spec.aesthetic_dir) if spec.aesthetic_dir else None
    if scorer is not None:
        scale = AESTHETIC_SIDE / min(task.width, task.height)
        big = _Oriented(task, max(1, round(task.width * scale)),
                        max(1, round(task.height * scale)), "rgb24")
    times: list[float] = []
    cut_frames: list[int] = []
    samples: list[list[float]] = []
    pictures: list[tuple[int, np.ndarray]] = []  # (sample row, RGB) awaiting the aesthetic model
    previous: tuple[float, np.ndarray] | None = None  # the frame before
    sampled: tuple[float, np.ndarray] | None = None  # the last sample's frame (motion's reference)
    next_sample = 0.0
    end = 0.0

    def score_pictures() -> None:
        if pictures:
            for (row, _), value in zip(pictures, scorer.score([p for _, p in pictures])):
                samples[row][5] = float(value)
            pictures.clear()

    with _open_video(task.path, task.threads, task.root, FileStamp.parse(task.stamp)
                     ) as (container, stream):
        decoded = _Decoded(container, stream, task.fps, task.path)
        try:
            for t, shown, frame in decoded:
                index = len(times)
                times.append(t)
                end = max(end, t + shown)
                bgr = small(frame)
                if detector is not None:
                    cut_frames.extend(detector.process_frame(index, bgr))
                gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
                if t >= next_sample - PTS_EPSILON_S:
                    prev_t = previous[0] if previous else math.nan
                    motion = (quality.flow_speed(previous[1], gray, t - prev_t, sampled[1])
                              if previous and sampled else math.nan)
                    sampled = (t, gray)
                    samples.append([t, prev_t, quality.brightness(gray), quality.sharpness(gray),
                                    motion, math.nan])
                    if scorer is not None:
                        pictures.append((len(samples) - 1, big(frame)))
                        if len(pictures) >= AESTHETIC_BATCH:
                            score_pictures()
                    next_sample = (math.floor(t * SCORE_FPS + 1e-9) + 1) / SCORE_FPS
                previous = (t, gray)
        except av.error.FFmpegError as e:  # demuxing failed: nothing further can be read
            at = f" ({times[-1]:.3f} s)" if times else ""
            raise MediaError(RejectReason.decode_error,
                             f"read error after frame {len(times)}{at} of {task.path}: {e}"
                             ) from e
    if not times:
        raise MediaError(RejectReason.decode_error,
                         f"{task.path}: no video frames could be decoded")
    if detector is not None:
        cut_frames.extend(detector.post_process(len(times)))
    if scorer is not None:
        score_pictures()
    cuts = sorted({times[i] for i in cut_frames if 0 < i < len(times)})
    table = np.asarray(samples, dtype=np.float64).reshape(-1, len(SAMPLE_COLUMNS))
    return SourceScan(cuts=np.asarray(cuts, dtype=np.float64), samples=table,
                      end_s=float(end), frames=len(times),
                      decode_errors=np.asarray(decoded.errors, dtype=np.float64))


def default_threads(tasks: int) -> int:
    """Decoder threads per scan so that concurrent scans use the cores without oversubscribing."""
    cores = os.cpu_count() or 1
    return max(1, cores // max(1, min(tasks, cores)))
