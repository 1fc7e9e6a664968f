import pytest
from pydantic import ValidationError

from cog_assets.core.buckets import (
    Bucket,
    budget_buckets,
    explicit_buckets,
    nearest_bucket,
)
from cog_assets.core.config import FrameSettings
from cog_assets.core.profiles import ProfileError, get_profile
from cog_assets.media.frame_policy import FramePolicy

P5B = get_profile("cogvideox-5b")


def test_budget_buckets_fit_the_budget_and_include_the_base_shape():
    buckets = budget_buckets(P5B, 13312)
    assert Bucket(49, 512, 512) in buckets
    for b in buckets:
        assert P5B.video_tokens(b.num_frames, b.height, b.width) <= 13312
        assert b.height % 16 == 0 and b.width % 16 == 0 and (b.num_frames - 1) % 8 == 0
    squares = sorted((b for b in buckets if b.height == b.width), key=lambda b: b.num_frames)
    # Fewer frames buy a larger frame: 9 frames at ~1024², 49 at 512².
    assert squares[0].num_frames == 9 and squares[0].height >= 1024
    assert squares[-1] == Bucket(49, 512, 512)


def test_clips_of_several_aspects_land_in_their_nearest_bucket():
    buckets = explicit_buckets(P5B, ["49x480x720", "49x720x480", "49x512x512", "17x480x720"])
    assert nearest_bucket(buckets, 1920, 1080, 200).key == "49x480x720"  # landscape
    assert nearest_bucket(buckets, 1080, 1920, 200).key == "49x720x480"  # portrait
    assert nearest_bucket(buckets, 600, 600, 200).key == "49x512x512"  # square
    assert nearest_bucket(buckets, 1920, 1080, 20).key == "17x480x720"  # too short for 49
    assert nearest_bucket(buckets, 1920, 1080, 5) is None  # too short for any


def test_policy_assigns_by_duration_and_refuses_bad_buckets():
    policy = FramePolicy.build(P5B, FrameSettings(buckets=["49x480x720", "17x480x720"]))
    assert policy.assign(1280, 720, 10.0, 0.02).key == "49x480x720"
    assert policy.assign(1280, 720, 2.5, 0.02).key == "17x480x720"  # 2.5 s at 8 fps: 21 frames
    assert policy.assign(1280, 720, 1.0, 0.02) is None
    stride = FramePolicy.build(P5B, FrameSettings(buckets=["49x480x720"], short_clips="stride"))
    assert stride.assign(1280, 720, 1.0, 0.02).key == "49x480x720"
    with pytest.raises(ProfileError, match="frame count 48"):
        FramePolicy.build(P5B, FrameSettings(buckets=["48x480x720"]))
    with pytest.raises(ValidationError, match="not of the form FxHxW"):
        FrameSettings(buckets=["480x720"])
    with pytest.raises(ValidationError, match="'cover', 'stretch' or 'crop'"):
        FrameSettings(resize="fit")


@pytest.mark.parametrize("name, budget", [("cogvideox-5b-i2v", 17550),
                                          ("cogvideox1.5-5b-i2v", 120000),
                                          ("tiny-1.5-i2v", 200)])
def test_budget_buckets_of_profiles_with_size_rules_keep_every_aspect_they_can(name, budget):
    """A budget on a profile with a fixed size, or a fixed short side and longest side, builds
    sizes within those rules instead of dropping the shapes that break them."""
    from cog_assets.core.profiles import check_clip_shape

    profile = get_profile(name)
    buckets = budget_buckets(profile, budget)
    for b in buckets:
        check_clip_shape(profile, b.num_frames, b.height, b.width)  # raises on a broken rule
        assert profile.video_tokens(b.num_frames, b.height, b.width) <= budget
    if profile.short_side:
        aspects = {round(b.height / b.width, 2) for b in buckets}
        assert len(aspects) >= 5 and any(a > 1 for a in aspects) and any(a < 1 for a in aspects)
    else:
        assert {(b.height, b.width) for b in buckets} == {profile.fixed_size}
