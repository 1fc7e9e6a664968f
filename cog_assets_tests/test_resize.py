import numpy as np

from cog_assets.media.resize import cover_geometry, resize_cover


def test_cover_scales_to_cover_and_crops_the_centre():
    g = cover_geometry(1920, 1080, 720, 480)  # 16:9 into 3:2: height decides
    assert (g.scaled_width, g.scaled_height) == (854, 480)
    assert (g.crop_x, g.crop_y) == (67, 0)
    g = cover_geometry(1080, 1920, 720, 480)  # portrait into landscape: width decides
    assert (g.scaled_width, g.scaled_height) == (720, 1280)
    assert (g.crop_x, g.crop_y) == (0, 400)


def test_same_aspect_needs_no_crop():
    g = cover_geometry(1440, 960, 720, 480)
    assert (g.scaled_width, g.scaled_height, g.crop_x, g.crop_y) == (720, 480, 0, 0)


def test_resize_cover_keeps_the_centre_and_antialiases():
    frames = np.zeros((2, 100, 300, 3), dtype=np.uint8)
    frames[:, :, 100:200] = 255  # the centre third is white
    out = resize_cover(frames, 32, 32)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    assert out[:, :, 8:24].min() == 255  # the crop is the white centre
    # A one-pixel checkerboard averages to grey when shrunk with antialiasing.
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    checker = np.repeat(checker[None, :, :, None], 3, axis=3)
    small = resize_cover(checker, 16, 16)
    assert abs(float(small.mean()) - 127.5) < 4 and small.std() < 8
