import pytest

from cog_assets.media.errors import MediaError
from cog_assets.media.sampling import pick_nearest, sample_timestamps


def test_window_at_start_is_spaced_by_the_target_fps():
    assert sample_timestamps(3.0, 5, 8) == [0.0, 0.125, 0.25, 0.375, 0.5]


def test_centre_window_is_centred():
    times = sample_timestamps(3.0, 9, 8, start="centre")
    assert times[0] == pytest.approx(1.0) and times[-1] == pytest.approx(2.0)


def test_random_window_is_seeded_and_inside_the_clip():
    a = sample_timestamps(10.0, 9, 8, start="random", seed=7)
    assert a == sample_timestamps(10.0, 9, 8, start="random", seed=7)
    assert a != sample_timestamps(10.0, 9, 8, start="random", seed=8)
    assert 0.0 <= a[0] and a[-1] <= 10.0


def test_too_short_clip_says_how_long_it_is_and_what_is_needed():
    with pytest.raises(MediaError) as err:
        sample_timestamps(0.5, 49, 8)
    assert err.value.reason == "too_short"
    assert "0.500 s long" in err.value.message and "need 6.000 s" in err.value.message


def test_tolerance_admits_rounded_durations():
    assert len(sample_timestamps(0.999, 9, 8, tolerance_s=1 / 48)) == 9


def test_vfr_frames_are_picked_by_timestamp_not_index():
    # A VFR source: frames at 0, 0.1, 0.5, 0.55, 1.0 s. At t=0.4 the frame on screen is the
    # one shown at 0.1 (index 1); index x nominal fps would pick a different one.
    times = [0.0, 0.1, 0.5, 0.55, 1.0]
    assert pick_nearest(times, [0.0, 0.4, 0.5, 0.6, 0.99, 1.2]) == [0, 1, 2, 3, 3, 4]


def test_times_before_the_first_frame_take_the_first_frame():
    assert pick_nearest([0.04, 0.08], [0.0]) == [0]
