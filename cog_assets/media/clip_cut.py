"""Cutting clips out of a source video as files the video-reading trainers load.

A clip file is H.264 in MP4 (what decord, torchvision and PyAV all read), shows the picture a
viewer sees (display rotation applied, pixels square), runs at a constant frame rate and has no
audio. It holds exactly the segment [start_s, end_s) of its source:

- **stream copy** where that is exact: the source is 8-bit 4:2:0 H.264 stored as MP4 stores it
  (MP4, Matroska), upright, with square pixels and a constant frame rate, the segment starts on
  a keyframe and either ends on one (or at the end of the stream) or the stream has no
  reordered frames, and no packet of it is damaged; its packets are copied onto an exact
  constant-rate grid from 0;
- **re-encode** otherwise: frames are decoded from the keyframe before the start (packet by
  packet: a damaged one is skipped and counted), picked by presentation time on a
  constant-rate grid (a variable-rate source repeats or drops frames as a viewer would see
  them), scaled to square pixels, turned upright and encoded with libx264 at the quality
  `crf`, a keyframe every `gop_s` seconds.

Sources are opened through `safe_open` like every upload (a regular file inside the data root,
single-file containers only), and one task hashes its source once and checks the bytes are those
its dataset was made from before cutting any of its segments. `cut_source` is the picklable
entry point the stage runs in isolated workers.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import av
import numpy as np
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter
from PIL import Image

from cog_assets.core.choices import CutMethod
from cog_assets.core.keys import file_digest
from cog_assets.core.reasons import RejectReason

from .decode import _scan_duration
from .errors import MediaError
from .probe import _rotation
from .safe_open import FileStamp, hash_at_rest, open_media
from .sampling import PTS_EPSILON_S, select_streaming

__all__ = ["ClipEncoding", "Segment", "CutTask", "CutClip", "cut_source", "clip_rate",
           "end_pictures", "CLIP_CODEC"]

CLIP_CODEC = "h264"
ENCODER = "libx264"
PIX_FMT = "yuv420p"
COPYABLE_PIX_FMTS = ("yuv420p", "yuvj420p")  # 8-bit 4:2:0: what every H.264 reader decodes
# Rates a clip keeps when its source's average is within 1 % of one (a phone's 29.87 is 30).
STANDARD_RATES = (Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001),
                  Fraction(30), Fraction(48), Fraction(50), Fraction(60000, 1001), Fraction(60))
RATE_TOLERANCE = 0.01
# Frame spacing a constant-rate source may wander by (timestamps rounded to the time base).
CFR_JITTER = 0.02
# How far short of a segment's end a source's video data may stop: the clip then ends with the
# data (containers that count a longer audio track or round their duration up); further short
# is a truncated file.
TAIL_SLACK_S = 0.5
COPY_LOOKAHEAD_S = 30.0  # how far past the end the copy plan reads packets for a keyframe


@dataclass(frozen=True)
class ClipEncoding:
    """Everything besides the source and the segment that decides a clip file's bytes (part
    of its key)."""

    crf: int
    preset: str = "veryfast"
    gop_s: float = 1.0

    def key_parts(self) -> dict:
        return {"codec": CLIP_CODEC, "pix_fmt": PIX_FMT, **asdict(self)}


@dataclass(frozen=True)
class Segment:
    """One clip of the source to cut: [start_s, end_s) into the file `out` (a temporary name
    the caller moves into place); `end_s` None: to the end of the video data (a whole file
    whose headers give no duration)."""

    start_s: float
    end_s: float | None
    out: str


@dataclass(frozen=True)
class CutTask:
    """All the clips of one source, for a worker process: the source is hashed once."""

    path: str
    content_hash: str  # the bytes the dataset was made from; other bytes are not cut
    segments: tuple[Segment, ...]
    encoding: ClipEncoding
    keyframes: bool = False  # also the first and last frame of each clip as PNGs
    threads: int = 0
    root: str | None = None
    known: tuple[int, int, str] | None = None  # (size, mtime_ns, sha256) the sensor hashed


@dataclass(frozen=True)
class CutClip:
    """A clip file as written."""

    method: CutMethod
    frames: int
    rate: str  # the constant frame rate, as a fraction ("30000/1001")
    width: int
    height: int
    bytes: int
    digest: str  # blake3 of the file
    first_png: bytes | None = None
    last_png: bytes | None = None
    skipped_packets: int = 0  # damaged source packets left out (the frame before held)

    @property
    def fps(self) -> float:
        return float(Fraction(self.rate))

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps


@dataclass
class SourceCut:
    """What became of each segment of a task, in order: a CutClip or (reason, message)."""

    results: list[CutClip | tuple[str, str]] = field(default_factory=list)


def clip_rate(fps: float) -> Fraction:
    """The constant rate of a clip cut from a source averaging `fps`: the standard rate within
    1 % of it, else the nearest whole number of frames per second."""
    if not fps > 0:
        return Fraction(25)
    nearest = min(STANDARD_RATES, key=lambda rate: abs(fps - float(rate)))
    if abs(fps - float(nearest)) <= RATE_TOLERANCE * float(nearest):
        return nearest
    return Fraction(max(1, round(fps)))


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


@dataclass(frozen=True)
class _Source:
    """What the cut needs to know of the source's video stream."""

    codec: str
    pix_fmt: str
    coded_width: int
    coded_height: int
    sar: float
    rotation: int  # clockwise quarter turns in degrees
    rate: Fraction  # the clip's constant rate
    average_fps: float
    container: str  # the demuxer's names, e.g. "mov,mp4,m4a,3gp,3g2,mj2"

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) of the clip: square pixels, turned upright, even for 4:2:0."""
        width, height = self.coded_width * self.sar, self.coded_height
        if self.rotation in (90, 270):
            width, height = height, width
        return _even(width), _even(height)


def _source(container: av.container.InputContainer, name: str) -> tuple[av.VideoStream, _Source]:
    if not container.streams.video:
        raise MediaError(RejectReason.no_video_stream, f"{name} has no video stream")
    stream = container.streams.video[0]
    cc = stream.codec_context
    if cc is None or not cc.width or not cc.height:
        raise MediaError(RejectReason.unreadable,
                         f"{name}: the video stream has no usable codec parameters")
    rotation = _rotation(container, stream, name)  # unknown_rotation as the probe says it
    sar = float(stream.sample_aspect_ratio or cc.sample_aspect_ratio or 1) or 1.0
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    return stream, _Source(cc.name, cc.pix_fmt or "", cc.width, cc.height, sar, rotation,
                           clip_rate(fps), fps, container.format.name)


def _origin(stream: av.VideoStream) -> int | None:
    return stream.start_time


# -- stream copy -------------------------------------------------------------------------------

# Containers that store H.264 as MP4 does (length-prefixed NAL units, avcC extradata), so its
# packets go into an MP4 as they are; MPEG-TS and AVI carry Annex B streams.
COPYABLE_CONTAINERS = ("mov", "mp4", "matroska")


def _copyable(source: _Source) -> bool:
    return (source.codec == CLIP_CODEC
            and any(name in COPYABLE_CONTAINERS for name in source.container.split(",")) and source.pix_fmt in COPYABLE_PIX_FMTS
            and source.rotation == 0 and abs(source.sar - 1.0) < 1e-6
            and abs(source.average_fps - float(source.rate)) <= 1e-3 * float(source.rate))


def _nal_length_size(stream: av.VideoStream) -> int | None:
    """Bytes of each NAL unit's length prefix (from the avcC record), None if the stream is
    not stored length-prefixed."""
    extradata = stream.codec_context.extradata
    if not extradata or len(extradata) < 5 or extradata[0] != 1:
        return None
    return (extradata[4] & 3) + 1


def _whole_nal_units(data: bytes, size: int) -> bool:
    """Whether a packet is a run of length-prefixed NAL units that fills it exactly: a
    damaged packet (a length running past its end) would be copied as it is and fail in the
    trainer's decoder, so its segment is encoded again instead (the decoder skips it)."""
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + size], "big")
        pos += size + length
        if length == 0 or pos > len(data):
            return False
    return pos == len(data)


def _copy_plan(container: av.container.InputContainer, stream: av.VideoStream,
               source: _Source, start_s: float, end_s: float) -> list[av.Packet] | None:
    """The source's packets that are exactly the segment, or None where copying them would
    not be exact (a start off a keyframe, reordered frames cut at the end, a variable rate,
    a damaged packet)."""
    nal_size = _nal_length_size(stream)
    if not _copyable(source) or nal_size is None:
        return None
    tb = stream.time_base
    origin = _origin(stream)
    if origin is None or tb is None:
        return None
    frame_s = 1.0 / float(source.rate)
    tol = frame_s / 2
    if start_s > 0:
        container.seek(origin + int(start_s / tb), stream=stream, backward=True)
    packets: list[av.Packet] = []
    end_key = False
    last_end = None
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's flush packet
            continue
        if (packet.pts is None or packet.dts is None or packet.is_corrupt
                or not _whole_nal_units(bytes(packet), nal_size)):
            return None
        t = float((packet.pts - origin) * tb)
        if not packets:
            if not packet.is_keyframe or abs(t - start_s) > tol:
                return None  # the segment does not start on a keyframe
        elif packet.is_keyframe and t >= end_s - tol:
            end_key = abs(t - end_s) <= tol
            break
        if t > end_s + COPY_LOOKAHEAD_S:
            break
        packets.append(packet)
        step = float(packet.duration * tb) if packet.duration else frame_s
        last_end = t + step if last_end is None else max(last_end, t + step)
    else:  # the end of the stream: exact if the segment runs to it
        end_key = last_end is not None and last_end <= end_s + tol
    times = [float((p.pts - origin) * tb) for p in packets]
    inside = [p for p, t in zip(packets, times) if t < end_s - tol]
    if not end_key:
        if any(b < a for a, b in zip(times, times[1:])):
            return None  # reordered frames: dropping the later ones may orphan earlier ones
    elif len(inside) != len(packets):
        return None  # an open GOP: frames of the segment decode from the next one
    shown = sorted(t for p, t in zip(packets, times) if t < end_s - tol)
    gaps = np.diff(shown)
    if len(gaps) and np.max(np.abs(gaps - frame_s)) > CFR_JITTER * frame_s + float(tb):
        return None  # not a constant rate
    expected = round((end_s - start_s) * float(source.rate))
    if len(inside) != expected or not inside:
        return None
    return inside


def _write_copy(out: str, stream: av.VideoStream, packets: list[av.Packet], rate: Fraction
                ) -> int:
    """Mux the packets into an MP4 on an exact constant-rate grid: the k-th frame shown is at
    k / rate (a source's timestamps rounded to its time base, 33 or 34 ms in Matroska, do not
    carry over); decode times keep the packets' order and reordering delay."""
    order = sorted(range(len(packets)), key=lambda j: packets[j].pts)
    rank = {j: r for r, j in enumerate(order)}
    delay = max(j - rank[j] for j in range(len(packets)))
    time_base, step = Fraction(1, rate.numerator), rate.denominator
    with av.open(out, "w", format="mp4", options={"movflags": "+faststart"}) as output:
        target = output.add_stream_from_template(stream)
        target.time_base = time_base
        for j, packet in enumerate(packets):
            packet.pts = rank[j] * step
            packet.dts = (j - delay) * step
            packet.duration = step
            packet.time_base = time_base
            packet.stream = target
            output.mux(packet)
    return len(packets)


# -- re-encode ---------------------------------------------------------------------------------

class _Overshot(Exception):
    """The seek landed after the segment's start; decode from the beginning instead."""


def _upright(source: _Source) -> tuple[VideoReformatter, int, int, int]:
    """(reformatter, width and height to scale the coded frame to, quarter turns)."""
    width, height = source.upright_size
    quarter = source.rotation // 90 % 4
    pre_w, pre_h = (height, width) if quarter % 2 else (width, height)
    return VideoReformatter(), pre_w, pre_h, quarter


def _turn(frame: av.VideoFrame, quarter: int) -> av.VideoFrame:
    """A yuv420p frame turned `quarter` quarter turns clockwise (each plane on its own)."""
    if not quarter:
        return frame
    h, w = frame.height, frame.width
    packed = frame.to_ndarray()  # Y (h rows), then U and V, each (h/2 x w/2), row-packed
    y = packed[:h]
    chroma = packed[h:].reshape(-1)
    half = (h // 2) * (w // 2)
    u = chroma[:half].reshape(h // 2, w // 2)
    v = chroma[half:].reshape(h // 2, w // 2)
    planes = [np.rot90(plane, k=-quarter) for plane in (y, u, v)]
    turned_h, turned_w = planes[0].shape
    data = np.concatenate([p.reshape(-1) for p in planes]).reshape(turned_h * 3 // 2, turned_w)
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(data), format=PIX_FMT)


MAX_CONSECUTIVE_ERRORS = 8  # damaged packets in a row a cut skips before it gives up


def _frames(container: av.container.InputContainer, stream: av.VideoStream, state: dict
            ) -> Iterator[av.VideoFrame]:
    """Decoded frames, packet by packet: a damaged packet costs only its frames (the clip
    shows the frame before it for as long, as a player would) and is counted in
    state["skipped"]; more than MAX_CONSECUTIVE_ERRORS in a row is a decode error."""
    failures = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()  # the final empty packet flushes the decoder
        except av.error.InvalidDataError:
            failures += 1
            state["skipped"] += 1
            if failures > MAX_CONSECUTIVE_ERRORS:
                raise
            continue
        failures = 0
        yield from frames


def _timed(container: av.container.InputContainer, stream: av.VideoStream, start_s: float,
           seek: bool, state: dict) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames with their time from the stream start, from the keyframe before
    `start_s` (with `seek`) or from the beginning."""
    origin = stream.start_time
    seeked = seek and origin is not None and start_s > 0
    if seeked:
        container.seek(origin + int(start_s / stream.time_base), stream=stream, backward=True)
    base = None if origin is None else float(origin * stream.time_base)
    for frame in _frames(container, stream, state):
        if frame.time is None:
            t = (state["time"] + state["step"]) if state["count"] else 0.0
        else:
            if base is None:
                base = frame.time
            t = frame.time - base
        if seeked and state["count"] == 0 and t > start_s + PTS_EPSILON_S:
            raise _Overshot
        if frame.duration:
            state["step"] = float(frame.duration * stream.time_base)
        state.update(time=t, count=state["count"] + 1)
        yield t, frame
    state["eof"] = True


def _re_encode(task: CutTask, segment: Segment, expect: FileStamp, seek: bool) -> int:
    name = os.path.basename(task.path)
    with open_media(task.path, root=task.root, expect=expect) as container:
        stream, source = _source(container, name)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = task.threads
        reformatter, pre_w, pre_h, quarter = _upright(source)
        width, height = source.upright_size
        rate = source.rate
        count = max(1, round((segment.end_s - segment.start_s) * float(rate)))
        grid = [segment.start_s + i / float(rate) for i in range(count)]
        state = {"time": 0.0, "step": 1.0 / float(rate), "count": 0, "eof": False,
                 "skipped": 0}
        with av.open(segment.out, "w", format="mp4",
                     options={"movflags": "+faststart"}) as output:
            target = output.add_stream(ENCODER, rate=rate)
            target.width, target.height, target.pix_fmt = width, height, PIX_FMT
            target.codec_context.time_base = 1 / rate
            target.gop_size = max(1, round(task.encoding.gop_s * float(rate)))
            target.codec_context.thread_count = task.threads
            target.options = {"crf": str(task.encoding.crf), "preset": task.encoding.preset}
            try:
                for picked, frame in select_streaming(
                        _timed(container, stream, segment.start_s, seek, state), grid):
                    data_end = state["time"] + state["step"]
                    if state["eof"] and grid[picked[-1]] > data_end + PTS_EPSILON_S:
                        if segment.end_s - data_end > TAIL_SLACK_S:
                            raise MediaError(RejectReason.truncated, (
                                f"{name}: video data ends at {data_end:.3f} s but the clip "
                                f"runs to {segment.end_s:.3f} s"))
                        # the container's end overstated the data's (a longer audio track,
                        # a rounded duration): the clip ends with the data, never padded
                        picked = [i for i in picked if grid[i] < data_end - PTS_EPSILON_S]
                        if not picked:
                            break
                    down = frame.width * frame.height > pre_w * pre_h
                    scaled = reformatter.reformat(
                        frame, width=pre_w, height=pre_h, format=PIX_FMT,
                        interpolation=Interpolation.AREA if down else Interpolation.BICUBIC)
                    picture = _turn(scaled, quarter)
                    # keyframes where the GOP says (x264 keeps a decoded frame's I type)
                    picture.pict_type = PictureType.NONE
                    for i in picked:
                        picture.pts = i
                        picture.time_base = 1 / rate
                        output.mux(target.encode(picture))
            except av.error.FFmpegError as exc:
                if isinstance(exc, OSError):  # writing (a full disk), not the source
                    raise
                raise MediaError(RejectReason.decode_error, (
                    f"{name}: decode error at frame {state['count']} of the clip from "
                    f"{segment.start_s:.3f} s: {exc}")) from None
            if state["count"] == 0:
                raise MediaError(RejectReason.decode_error,
                                 f"{name}: no video frames could be decoded from "
                                 f"{segment.start_s:.3f} s")
            output.mux(target.encode(None))
    return state["skipped"]


# -- the task ----------------------------------------------------------------------------------

def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def end_pictures(path: str) -> tuple[bytes, bytes]:
    """The first and last frame of a clip file we wrote, as PNGs (decoded as a trainer would)."""
    first = last = None
    with av.open(path) as container:
        for frame in container.decode(video=0):
            if first is None:
                first = frame.to_ndarray(format="rgb24")
            last = frame
    if first is None or last is None:
        raise MediaError(RejectReason.decode_error, f"{path}: the clip file holds no frame")
    return _png(first), _png(last.to_ndarray(format="rgb24"))


def _measure(path: str) -> tuple[int, int, int, str]:
    """(frames, width, height, rate) of a written clip file, from its headers."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        return (stream.frames, stream.codec_context.width, stream.codec_context.height,
                str(stream.average_rate or stream.guessed_rate))


def _cut_one(task: CutTask, segment: Segment, expect: FileStamp) -> CutClip:
    name = os.path.basename(task.path)
    if segment.end_s is None:  # the headers give no duration: where the packets end
        with open_media(task.path, root=task.root, expect=expect, headers_only=True) as c:
            fps = _source(c, name)[1].average_fps
        segment = Segment(segment.start_s, _scan_duration(task.path, fps, task.root, expect),
                          segment.out)
    if not segment.end_s > segment.start_s:
        raise MediaError(RejectReason.segment_too_short,
                         f"{name}: [{segment.start_s}, {segment.end_s}) holds no time")
    with open_media(task.path, root=task.root, expect=expect) as container:
        stream, source = _source(container, name)
        try:
            packets = _copy_plan(container, stream, source, segment.start_s, segment.end_s)
            if packets is not None:
                _write_copy(segment.out, stream, packets, source.rate)
        except av.error.FFmpegError as exc:
            if isinstance(exc, OSError):  # the disk, not the file (ENOSPC, EIO): not the clip's
                raise
            # packets FFmpeg cannot read (a damaged or hostile file): the re-encode decodes
            # what it can, skips damaged packets, and names the file if it cannot
            _remove(segment.out)
            packets = None
    skipped = 0
    if packets is not None:
        method = CutMethod.stream_copy
    else:
        method = CutMethod.re_encode
        try:
            skipped = _re_encode(task, segment, expect, seek=True)
        except _Overshot:
            skipped = _re_encode(task, segment, expect, seek=False)
    try:
        frames, width, height, rate = _measure(segment.out)
        first = last = None
        if task.keyframes:
            first, last = end_pictures(segment.out)
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError):
            raise
        raise MediaError(RejectReason.decode_error, (
            f"{name}: the clip file cut from {segment.start_s:.3f} s cannot be read back: "
            f"{exc}")) from None
    return CutClip(method, frames, rate, width, height, os.path.getsize(segment.out),
                   file_digest(segment.out), first, last, skipped)


def cut_source(task: CutTask) -> SourceCut:
    """Cut every segment of one source; a segment that fails is (reason, message) in its
    place and leaves no file. A source whose bytes are not `content_hash` (it changed since
    its shard was made) cuts nothing."""
    name = os.path.basename(task.path)
    out = SourceCut()
    try:
        stamp, digest = hash_at_rest(task.path, task.root, known=task.known)
        if digest != task.content_hash:
            raise MediaError(RejectReason.deferred, (
                f"{name} changed since its shard was made (sha256 {digest[:12]}..., the "
                f"dataset has {task.content_hash[:12]}...): materialize its shard again"))
    except MediaError as exc:
        out.results = [(str(exc.reason), exc.message)] * len(task.segments)
        return out
    for segment in task.segments:
        try:
            out.results.append(_cut_one(task, segment, stamp))
        except MediaError as exc:
            _remove(segment.out)
            out.results.append((str(exc.reason), exc.message))
        except BaseException:
            _remove(segment.out)
            raise
    return out


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
