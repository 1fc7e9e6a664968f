import pytest

from cog_assets.core.profiles import (
    PROFILES,
    ProfileError,
    check_clip_shape,
    get_profile,
)


def test_every_profile_accepts_its_own_defaults():
    for profile in PROFILES.values():
        check_clip_shape(profile, profile.num_frames, profile.height, profile.width)


def test_latent_shape_follows_temporal_and_spatial_compression():
    p = get_profile("cogvideox-5b")
    assert p.latent_frames() == 13
    assert p.latent_shape() == (32, 13, 60, 90)
    assert p.text_shape() == (226, 4096)
    assert get_profile("cogvideox1.5-5b").latent_frames() == 21


def test_scaling_factors_are_the_model_cards():
    assert get_profile("cogvideox-2b").scaling_factor == pytest.approx(1.15258426)
    assert get_profile("cogvideox-5b").scaling_factor == 0.7
    assert get_profile("cogvideox1.5-5b").invert_scale_latents


def test_wrong_frame_count_is_refused_with_valid_alternatives():
    with pytest.raises(ProfileError, match=r"frame count 50 is not of the form 8k\+1.*49 and 57"):
        check_clip_shape(get_profile("cogvideox-5b"), 50, 480, 720)


def test_height_not_multiple_of_16_is_refused():
    with pytest.raises(ProfileError, match="height 470 is not a positive multiple of 16"):
        check_clip_shape(get_profile("cogvideox-5b"), 49, 470, 720)


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ProfileError, match="cogvideox-5b"):
        get_profile("cogvideox-7b")


def test_5b_i2v_only_takes_480x720():
    with pytest.raises(ProfileError, match=r"cogvideox-5b-i2v only takes 480x720"):
        check_clip_shape(get_profile("cogvideox-5b-i2v"), 49, 768, 768)


def test_15_frame_rule_and_i2v_short_side():
    p = get_profile("cogvideox1.5-5b")
    check_clip_shape(p, 161, 768, 1360)
    with pytest.raises(ProfileError, match=r"16k\+1; nearest valid counts are 49 and 65"):
        check_clip_shape(p, 57, 768, 1360)
    with pytest.raises(ProfileError, match="over the model's maximum of 161"):
        check_clip_shape(p, 177, 768, 1360)
    with pytest.raises(ProfileError, match="short side must be 768"):
        check_clip_shape(get_profile("cogvideox1.5-5b-i2v"), 81, 720, 1280)


def test_video_tokens_follow_design_formula():
    assert get_profile("cogvideox-5b").video_tokens(49, 512, 512) == 13312
    # 1.5: 21 latent frames padded to 22, halved: 11 x 48 x 85
    assert get_profile("cogvideox1.5-5b").video_tokens(81, 768, 1360) == 11 * 48 * 85
