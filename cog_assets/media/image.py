"""First-frame images for I2V (`images.txt`), read as a viewer sees them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cog_assets.core.choices import ResizeMode
from cog_assets.core.reasons import RejectReason
from cog_assets.media.errors import MediaError
from cog_assets.media.resize import resize_frames
from cog_assets.media.safe_open import open_regular_file


def read_image(path: str | os.PathLike, height: int, width: int, mode: ResizeMode | str,
               root: str | os.PathLike | None = None) -> np.ndarray:
    """uint8 [height, width, 3]: EXIF orientation applied, alpha dropped, resized like frames.
    Read from a regular file inside `root` (`open_regular_file`)."""
    path = Path(path)
    try:
        with os.fdopen(open_regular_file(path, root), "rb") as handle, \
                Image.open(handle) as image:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
            array = np.array(rgb)
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError(RejectReason.unreadable, f"image {path.name} cannot be read: {exc}") from None
    return resize_frames(array[None], height, width, mode)[0]
