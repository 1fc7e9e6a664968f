"""First-frame images for I2V (`images.txt`), read as a viewer sees them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cog_assets.choices import ResizeMode
from cog_assets.media.errors import MediaError
from cog_assets.media.resize import resize_frames
from cog_assets.reasons import RejectReason


def read_image(path: str | os.PathLike, height: int, width: int, mode: ResizeMode | str
               ) -> np.ndarray:
    """uint8 [height, width, 3]: EXIF orientation applied, alpha dropped, resized like frames."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
            array = np.array(rgb)
    except FileNotFoundError:
        raise MediaError(RejectReason.missing_file, f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError(RejectReason.unreadable, f"image {path.name} cannot be read: {exc}") from None
    return resize_frames(array[None], height, width, mode)[0]
