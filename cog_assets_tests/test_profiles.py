import pytest

from cog_assets.profiles import PROFILES, ProfileError, check_clip_shape, get_profile


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
