import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cog_assets.core.choices import ResizeMode
from cog_assets.media.resize import (
    CoverGeometry,
    cover_geometry,
    resize_frames,
    resize_geometry,
)

sizes = st.integers(1, 4000)


@given(sw=sizes, sh=sizes, dw=st.integers(1, 1500), dh=st.integers(1, 1500))
def test_cover_fills_target_keeps_aspect_and_centres(sw, sh, dw, dh):
    g = cover_geometry(sw, sh, dw, dh)
    assert g.scaled_width >= dw and g.scaled_height >= dh
    assert g.scaled_width == dw or g.scaled_height == dh  # tight on one side, no over-zoom
    # aspect kept to within rounding of one pixel on the scaled side
    scale = max(dw / sw, dh / sh)
    assert abs(g.scaled_width - sw * scale) <= 1 and abs(g.scaled_height - sh * scale) <= 1
    assert g.crop_x == (g.scaled_width - dw) // 2 and g.crop_y == (g.scaled_height - dh) // 2


def test_cover_examples():
    assert cover_geometry(1920, 1080, 720, 480) == CoverGeometry(854, 480, 67, 0)  # 853.3 rounds up
    assert cover_geometry(1080, 1920, 720, 480) == CoverGeometry(720, 1280, 0, 400)
    assert cover_geometry(720, 480, 720, 480) == CoverGeometry(720, 480, 0, 0)
    assert cover_geometry(1440, 960, 720, 480) == CoverGeometry(720, 480, 0, 0)  # same aspect: no crop
    with pytest.raises(ValueError):
        cover_geometry(0, 10, 10, 10)


def _target_image(h, w):
    """Grey frame with a red box at the centre and blue bars at the far left/right."""
    img = np.full((h, w, 3), 128, dtype=np.uint8)
    img[h // 2 - h // 8 : h // 2 + h // 8, w // 2 - h // 8 : w // 2 + h // 8] = (255, 0, 0)
    img[:, : w // 10] = (0, 0, 255)
    img[:, -w // 10 :] = (0, 0, 255)
    return img


def test_resize_cover_keeps_the_centre_and_crops_the_sides():
    frames = np.stack([_target_image(180, 640)] * 2)
    out = resize_frames(frames, 60, 60, "cover")
    assert out.shape == (2, 60, 60, 3) and out.dtype == np.uint8
    centre = out[0, 25:35, 25:35].reshape(-1, 3)
    assert (centre[:, 0] > 200).all() and (centre[:, 2] < 50).all()  # red box survives
    assert (out[0, :, :, 2] < 200).all()  # the blue side bars were cropped away
    assert np.abs(out[0, 30, 5].astype(int) - 128).max() <= 2  # grey, no padding bars
    thirds = np.zeros((2, 100, 300, 3), dtype=np.uint8)
    thirds[:, :, 100:200] = 255  # the centre third is white
    assert resize_frames(thirds, 32, 32, "cover")[:, :, 8:24].min() == 255  # the crop is the white centre


def test_resize_cover_downscale_is_antialiased():
    # A one-pixel checkerboard must average to grey, not alias to black/white stripes.
    board = ((np.indices((256, 256)).sum(axis=0) % 2) * 255).astype(np.uint8)
    frames = np.repeat(board[None, :, :, None], 3, axis=3)
    out = resize_frames(frames, 32, 32, "cover", interpolation="bilinear")
    assert np.abs(out.astype(int) - 128).max() <= 3
    small = resize_frames(frames[:, :64, :64], 16, 16, "cover")  # the default interpolation, too
    assert abs(float(small.mean()) - 127.5) < 4 and small.std() < 8


def test_resize_cover_identity_and_validation():
    frames = np.random.default_rng(0).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    assert np.array_equal(resize_frames(frames, 20, 30, "cover"), frames)
    with pytest.raises(ValueError):
        resize_frames(frames.astype(np.float32), 10, 10, "cover")


def test_resize_modes_geometry():
    assert ResizeMode.words() == ("cover", "stretch", "crop")
    assert resize_geometry(256, 64, 64, 64, "stretch") == CoverGeometry(64, 64, 0, 0)
    assert resize_geometry(256, 64, 64, 32, "crop") == CoverGeometry(256, 64, 96, 16)  # native pixels
    assert resize_geometry(32, 32, 64, 48, "crop") == cover_geometry(32, 32, 64, 48)  # too small: cover
    with pytest.raises(ValueError):
        resize_geometry(10, 10, 5, 5, "letterbox")


def test_resize_stretch_keeps_the_edges():
    frames = np.stack([_target_image(180, 640)])
    out = resize_frames(frames, 60, 60, "stretch")
    assert out[0, 30, 1, 2] > 200 and out[0, 30, 58, 2] > 200  # both blue bars remain
