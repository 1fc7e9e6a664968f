import pickle

import pytest

from cog_assets.core.reasons import RejectReason
from cog_assets.media.errors import MediaError


def test_media_error_carries_reason_and_message():
    e = MediaError("too_short", "clip lasts 1.0s but needs 6.0s")
    assert (e.reason, e.message) == ("too_short", "clip lasts 1.0s but needs 6.0s")
    assert "too_short" in str(e) and "6.0s" in str(e)


def test_media_error_survives_pickling_for_process_pools():
    e = pickle.loads(pickle.dumps(MediaError("decode_error", "decode error at frame 3")))
    assert type(e) is MediaError
    assert (e.reason, e.message) == ("decode_error", "decode error at frame 3")


def test_a_media_error_carries_one_of_the_reject_reasons():
    assert MediaError("truncated", "x").reason is RejectReason.truncated
    with pytest.raises(ValueError):  # a reason not in the one list is a bug, caught at once
        MediaError("looks_bad", "x")
