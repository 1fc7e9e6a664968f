import pickle

from cog_assets.media.errors import REASONS, MediaError


def test_media_error_carries_reason_and_message():
    e = MediaError("too_short", "clip lasts 1.0s but needs 6.0s")
    assert (e.reason, e.message) == ("too_short", "clip lasts 1.0s but needs 6.0s")
    assert "too_short" in str(e) and "6.0s" in str(e)


def test_media_error_survives_pickling_for_process_pools():
    e = pickle.loads(pickle.dumps(MediaError("decode_error", "decode error at frame 3")))
    assert type(e) is MediaError
    assert (e.reason, e.message) == ("decode_error", "decode error at frame 3")


def test_reason_codes_are_the_documented_ones():
    assert REASONS == {"empty_file", "unreadable", "no_video_stream", "too_short", "decode_error", "too_small",
                       "truncated"}
