import dataclasses
import time

import av
import numpy as np
import pytest

from cog_assets.media.errors import MediaError
from cog_assets.media.probe import VideoProbe, clockwise_rotation, probe_video
from cog_assets.media.synthetic import write_test_video


def _wav(path):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_probe_synthetic_clip(tmp_path):
    p = probe_video(write_test_video(tmp_path / "a.mp4", width=160, height=96, fps=24, seconds=2.0))
    assert p == VideoProbe(codec="h264", pix_fmt="yuv420p", coded_width=160, coded_height=96, width=160,
                           height=96, sar=1.0, rotation=0, fps=24.0, duration_s=2.0, frame_count=48,
                           has_audio=False)
    row = dataclasses.asdict(p)
    assert row["width"] == 160 and row["duration_s"] == 2.0 and len(row) == 12
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in row.values())


@pytest.mark.parametrize("rotation,size", [(90, (96, 160)), (180, (160, 96)), (270, (96, 160))])
def test_probe_rotation_gives_display_size(tmp_path, rotation, size):
    p = probe_video(write_test_video(tmp_path / "r.mp4", seconds=0.25, rotation=rotation))
    assert p.rotation == rotation
    assert (p.width, p.height) == size and (p.coded_width, p.coded_height) == (160, 96)


def test_clockwise_rotation_convention():
    assert [clockwise_rotation(a) for a in (0, -90, 90, 180, -180, -89.6)] == [0, 90, 270, 180, 180, 90]


def test_probe_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    cases = {empty: "empty_file", junk: "unreadable", _wav(tmp_path / "a.wav"): "no_video_stream",
             tmp_path / "missing.mp4": "missing_file"}
    for path, reason in cases.items():
        with pytest.raises(MediaError) as info:
            probe_video(path)
        assert info.value.reason == reason, path
    with pytest.raises(MediaError) as info:
        probe_video(junk)
    assert "Invalid data" in info.value.message  # the PyAV error text is kept


def test_mp4_cut_inside_its_index_never_crashes_probe(tmp_path):
    full = write_test_video(tmp_path / "full.mp4", seconds=1.0)
    data = full.read_bytes()
    moov = data.rfind(b"moov") - 4  # a plain mp4 keeps its index at the end
    for i, cut in enumerate(range(moov, len(data), 7)):
        path = tmp_path / f"cut_{i}.mp4"
        path.write_bytes(data[:cut])
        try:
            p = probe_video(path)
        except MediaError as e:
            assert e.reason in {"unreadable", "no_video_stream"}, e
        else:
            assert p.width == 160 and p.height == 96


def test_real_rotated_phone_clip_is_portrait(shared_media):
    p = probe_video(shared_media / "videos/decord__video_90.mov")  # display matrix says -90 (ccw)
    assert (p.coded_width, p.coded_height, p.rotation) == (568, 320, 90)
    assert (p.width, p.height) == (320, 568)
    assert probe_video(shared_media / "videos/decord__video_0.mov").rotation == 0


def test_real_sample_aspect_ratio(shared_media):
    p = probe_video(shared_media / "videos/mediabunny__sar_2x1.mp4")
    assert (p.coded_width, p.sar, p.width, p.height) == (640, 2.0, 1280, 360)
    assert probe_video(shared_media / "videos/mediabunny__avi_mpeg4-mp3.avi").width == 427  # 320 * 4/3


def test_real_metadata(shared_media):
    nasa = probe_video(shared_media / "videos/torchcodec__nasa_13013.mp4")
    assert nasa.has_audio and nasa.fps == 25.0 and nasa.duration_s == pytest.approx(13.0, abs=0.05)
    assert probe_video(shared_media / "videos/torchcodec__h264_10bits.mp4").pix_fmt == "yuv420p10le"
    vfr = probe_video(shared_media / "videos/torchcodec__var_fps_video.mp4")
    assert vfr.fps == pytest.approx(20.089, abs=1e-3) and vfr.frame_count == 300
    assert probe_video(shared_media / "edge/moviepy__no_duration.webm").duration_s is None
    # Matroska: the video track's DURATION tag, not the container's (its audio runs to 10.381 s)
    assert probe_video(shared_media / "videos/decord__flipping_a_pancake.mkv").duration_s == pytest.approx(10.333)


def test_real_edge_cases(shared_media):
    for name, reason in [("edge/moviepy__result.webm", "empty_file"),
                         ("edge/mediabunny__avi_aac-only.avi", "no_video_stream")]:
        with pytest.raises(MediaError) as info:
            probe_video(shared_media / name)
        assert info.value.reason == reason


def test_probe_does_not_decode_the_clip(shared_media):
    path = shared_media / "videos/mediabunny__1080p-portrait-derotated.mp4"
    t0 = time.perf_counter()
    p = probe_video(path)
    assert time.perf_counter() - t0 < 0.5  # a 1080p clip: headers + one frame only
    assert (p.width, p.height) == (1080, 1920)
