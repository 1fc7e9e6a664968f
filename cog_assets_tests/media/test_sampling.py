import pytest
from hypothesis import given
from hypothesis import strategies as st

from cog_assets.media.errors import MediaError
from cog_assets.media.sampling import (
    PTS_EPSILON_S,
    frames_available,
    pick_nearest,
    sample_timestamps,
    select_streaming,
)
from cog_assets_tests.fixtures.frames import sample

FPS = st.sampled_from([8.0, 12.0, 15.0, 16.0, 24.0, 30.0])


@given(n=st.integers(1, 60), fps=FPS, extra=st.floats(0, 20), start=st.sampled_from(["start", "centre", "random"]),
       seed=st.integers(0, 2**31))
def test_window_is_evenly_spaced_and_inside_the_clip(n, fps, extra, start, seed):
    duration = (n - 1) / fps + extra
    times = sample(duration, n, fps, start, seed)
    assert len(times) == n
    assert times[0] >= 0
    assert times[-1] <= duration + 1e-9
    for a, b in zip(times, times[1:]):
        assert b - a == pytest.approx(1 / fps)


def test_start_centre_and_random_positions():
    assert sample(10.0, 3, 1.0, "start") == [0.0, 1.0, 2.0]
    assert sample(3.0, 5, 8) == [0.0, 0.125, 0.25, 0.375, 0.5]  # spaced by the target fps
    centred = sample(3.0, 9, 8, start="centre")
    assert centred[0] == pytest.approx(1.0) and centred[-1] == pytest.approx(2.0)
    assert sample(10.0, 3, 1.0, "centre") == [4.0, 5.0, 6.0]
    assert sample(10.0, 3, 1.0, "center") == [4.0, 5.0, 6.0]
    r1 = sample(10.0, 3, 1.0, "random", seed=7)
    assert r1 == sample(10.0, 3, 1.0, "random", seed=7)  # deterministic
    assert sample(10.0, 9, 8, "random", seed=7) != sample(10.0, 9, 8, "random", seed=8)
    offsets = {sample(10.0, 3, 1.0, "random", seed=s)[0] for s in range(20)}
    assert len(offsets) > 10 and all(0 <= o <= 8.0 for o in offsets)


def test_exact_fit_is_accepted_and_tolerance_admits_rounded_durations():
    assert sample(6.0, 49, 8.0)[-1] == pytest.approx(6.0)
    with pytest.raises(MediaError):
        sample(5.99, 49, 8.0)
    half_source_frame = 0.5 / 30
    assert len(sample(5.99, 49, 8.0, "centre", tolerance_s=half_source_frame)) == 49
    assert len(sample(0.999, 9, 8, tolerance_s=1 / 48)) == 9


@pytest.mark.parametrize("duration", [0.5, 2.0])
def test_too_short_names_duration_and_need(duration):
    with pytest.raises(MediaError) as info:
        sample(duration, 49, 8.0)
    assert info.value.reason == "too_short"
    assert f"{duration:.3f} s long" in info.value.message and "need 6.000 s" in info.value.message


def test_short_clip_policies():
    assert sample(0.5, 5, 8.0, short_clips="stride") == pytest.approx([0, 0.125, 0.25, 0.375, 0.5])
    assert sample(0.5, 9, 8.0, short_clips="stride") == pytest.approx([i / 16 for i in range(9)])
    assert sample(0.3, 5, 8.0, "centre", short_clips="pad") == [0, 0.125, 0.25, 0.25, 0.25]
    assert sample(9.0, 3, 1.0, "centre", short_clips="pad") == [3.5, 4.5, 5.5]  # long: unaffected
    with pytest.raises(ValueError):
        sample_timestamps(1.0, 3, 1.0, "start", 0, short_clips="loop")


@given(n=st.integers(1, 80), fps=FPS, duration=st.floats(0, 12), tol=st.sampled_from([0.0, 1 / 60, 1 / 48]))
def test_frames_available_agrees_with_sample_timestamps(n, fps, duration, tol):
    fits = n <= frames_available(duration, fps, tol)
    try:
        sample(duration, n, fps, tolerance_s=tol)
        assert fits
    except MediaError:
        assert not fits


def test_frames_available_unknown_duration():
    assert frames_available(None, 8.0) is None
    assert frames_available(6.0, 8.0) == 49 and frames_available(5.99, 8.0) == 48


@pytest.mark.parametrize("bad", [dict(num_frames=0), dict(fps=0.0), dict(start="middle")])
def test_invalid_arguments_are_programming_errors(bad):
    args = dict(duration_s=5.0, num_frames=3, fps=8.0, start="start", seed=0,
                short_clips="reject") | bad
    with pytest.raises(ValueError):
        sample_timestamps(**args)


def test_pick_nearest_on_vfr_uses_presentation_intervals():
    frame_times = [0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.0]
    wanted = [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0, 1.2]
    # index x nominal fps would give 0,1,2,3,...; by timestamp 0.25/0.375 still show frame 2.
    assert pick_nearest(frame_times, wanted) == [0, 1, 2, 2, 3, 5, 5, 6, 6]
    # At t=0.4 the frame on screen is the one shown at 0.1 (index 1), not the nearest one.
    assert pick_nearest([0.0, 0.1, 0.5, 0.55, 1.0], [0.0, 0.4, 0.5, 0.6, 0.99, 1.2]) == [0, 1, 2, 3, 3, 4]


def test_pick_nearest_tolerates_millisecond_rounded_pts():
    # Matroska stores 30 fps as 0, 33, 67, 100 ms; sampling at 30 fps must not repeat frames.
    frame_times = [0.0, 0.033, 0.067, 0.1]
    assert pick_nearest(frame_times, [i / 30 for i in range(4)]) == [0, 1, 2, 3]


def test_pick_nearest_edge_cases():
    assert pick_nearest([0.5, 1.0], [0.0]) == [0]  # before the first frame -> first frame
    assert pick_nearest([0.04, 0.08], [0.0]) == [0]  # a first frame a little after zero, too
    assert pick_nearest([1.0, 0.0, 0.5], [0.6, 0.2]) == [2, 1]  # unsorted input, original indices
    with pytest.raises(ValueError):
        pick_nearest([], [0.0])


frame_lists = st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=40, unique=True).map(sorted)
wanted_lists = st.lists(st.floats(-1, 11, allow_nan=False), min_size=1, max_size=20).map(sorted)


@given(frame_times=frame_lists, wanted=wanted_lists)
def test_pick_nearest_is_last_frame_at_or_before(frame_times, wanted):
    for t, i in zip(wanted, pick_nearest(frame_times, wanted)):
        assert frame_times[i] <= t + PTS_EPSILON_S or i == 0
        assert i == len(frame_times) - 1 or frame_times[i + 1] > t + PTS_EPSILON_S


@given(frame_times=frame_lists, wanted=wanted_lists)
def test_streaming_selection_matches_pick_nearest(frame_times, wanted):
    expected = pick_nearest(frame_times, wanted)
    got = [None] * len(wanted)
    for idxs, item in select_streaming(((t, i) for i, t in enumerate(frame_times)), wanted):
        for k in idxs:
            assert got[k] is None
            got[k] = item
    assert got == expected


def test_streaming_selection_stops_pulling_after_the_last_wanted_frame():
    pulled = []

    def frames():
        for i in range(1000):
            pulled.append(i)
            yield i / 10, i

    picks = list(select_streaming(frames(), [0.0, 0.5]))
    assert picks == [([0], 0), ([1], 5)]
    assert len(pulled) == 7  # frame 6 settles t=0.5; nothing more is decoded
