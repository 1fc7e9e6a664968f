"""Short-clip policies and resize modes on generated video."""

import numpy as np
import pytest

from cog_assets.media.errors import MediaError
from cog_assets.media.synthetic import write_test_video
from cog_assets_tests.fixtures.frames import read_frames


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    # 0.5 s at 24 fps: 12 frames; a 9-frame window at 8 fps needs 1 s.
    return write_test_video(tmp_path_factory.mktemp("v") / "short.mp4", seconds=0.5)


def _square_x(frame):
    white = (frame.min(axis=2) > 230).sum(axis=0)
    return float(np.average(np.arange(frame.shape[1]), weights=white + 1e-9))


def test_reject_is_the_default(short_clip):
    with pytest.raises(MediaError, match="need 1.000 s"):
        read_frames(short_clip, num_frames=9, fps=8, height=64, width=96)


def test_stride_spreads_the_window_over_the_whole_clip(short_clip):
    frames = read_frames(short_clip, num_frames=9, fps=8, height=64, width=96,
                              short_clips="stride")
    xs = [_square_x(f) for f in frames]
    assert xs == sorted(xs) and xs[-1] > xs[0] + 30  # moves through the whole clip


def test_pad_repeats_the_last_frame(short_clip):
    frames = read_frames(short_clip, num_frames=9, fps=8, height=64, width=96,
                              short_clips="pad")
    # 0.5 s at 8 fps gives frames at 0..0.5 s (5 of them, the last one at the end); then copies.
    assert np.array_equal(frames[5], frames[8])
    assert not np.array_equal(frames[0], frames[4])


def test_resize_modes(tmp_path):
    clip = write_test_video(tmp_path / "wide.mp4", width=256, height=64, seconds=1.5)
    cover = read_frames(clip, num_frames=9, fps=8, height=64, width=64)
    stretch = read_frames(clip, num_frames=9, fps=8, height=64, width=64,
                               resize="stretch")
    crop = read_frames(clip, num_frames=9, fps=8, height=32, width=64, resize="crop")
    assert cover.shape == stretch.shape == (9, 64, 64, 3) and crop.shape == (9, 32, 64, 3)
    # The red top-left marker survives only a resize that keeps the left edge: stretch.
    assert stretch[0, 0, 0, 0] > 200 and stretch[0, 0, 0, 2] < 80
    assert not (cover[0, 0, 0, 0] > 200 and cover[0, 0, 0, 2] < 80)


def test_limits_reject_with_their_reason(tmp_path):
    from pathlib import Path

    from cog_assets.core.config import MediaLimits
    from cog_assets.core.profiles import get_profile
    from cog_assets.media.frame_policy import FramePolicy
    from cog_assets.stages.validation import verdict

    clip = Path(write_test_video(tmp_path / "a.mp4", width=160, height=96, seconds=2.0))
    policy = FramePolicy.build(get_profile("tiny"))
    assert verdict(clip, policy, MediaLimits())[1] is None
    cases = {
        "too_large": MediaLimits(max_pixels=160 * 96 - 1),
        "too_long": MediaLimits(max_duration_s=1.5),
        "too_small": MediaLimits(min_side=100),
        "file_too_large": MediaLimits(max_file_bytes=10),
    }
    for reason, limits in cases.items():
        _, got, message = verdict(clip, policy, limits, clip.stat().st_size)
        assert got == reason, (reason, message)
        assert "a.mp4" in message
