import time

import av
import numpy as np
import pytest

from cog_assets.media.synthetic import make_frame, read_frame_index, write_test_video


def _decode_all(path):
    with av.open(str(path)) as c:
        return [(f.time, f.rotation, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def test_default_clip_is_fast_and_has_the_expected_frames(tmp_path):
    t0 = time.perf_counter()
    path = write_test_video(tmp_path / "clips" / "a.mp4")  # parent folders are created
    assert time.perf_counter() - t0 < 1.0
    frames = _decode_all(path)
    assert len(frames) == 48
    assert [read_frame_index(f) for _, _, f in frames] == list(range(48))
    assert frames[1][0] == pytest.approx(1 / 24)
    first, last = frames[0][2].astype(int), frames[-1][2].astype(int)
    assert first.shape == (96, 160, 3)
    assert np.abs(first - last).mean() > 5  # the square moved


def test_marker_square_and_codes_survive_encoding(tmp_path):
    _, _, f = _decode_all(write_test_video(tmp_path / "a.mp4", seconds=0.5))[5]
    assert f[4, 4, 0] > 200 and f[4, 4, 1] < 60 and f[4, 4, 2] < 60  # red top-left marker
    assert np.abs(f.astype(int) - make_frame(5, num_frames=12).astype(int)).mean() < 4


def test_seed_changes_the_background(tmp_path):
    a = make_frame(0, seed=0).astype(int)
    b = make_frame(0, seed=1).astype(int)
    assert np.abs(a - b).mean() > 10


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_written_as_a_display_matrix(tmp_path, rotation):
    frames = _decode_all(write_test_video(tmp_path / "r.mp4", seconds=0.25, rotation=rotation))
    # PyAV/FFmpeg report the counter-clockwise angle; ours is clockwise.
    assert (-frames[0][1]) % 360 == rotation


def test_variable_frame_rate_timestamps(tmp_path):
    times = [0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.0]
    frames = _decode_all(write_test_video(tmp_path / "v.mp4", frame_times=times))
    assert [t for t, _, _ in frames] == pytest.approx(times, abs=1e-3)


@pytest.mark.parametrize("name,codec", [("m.avi", "mpeg4"), ("w.webm", "libvpx-vp9")])
def test_other_codecs(tmp_path, name, codec):
    frames = _decode_all(write_test_video(tmp_path / name, codec=codec, seconds=0.5))
    assert [read_frame_index(f) for _, _, f in frames] == list(range(12))


def test_rejects_odd_sizes(tmp_path):
    with pytest.raises(ValueError):
        write_test_video(tmp_path / "x.mp4", width=161)
