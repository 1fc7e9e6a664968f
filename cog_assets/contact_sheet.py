"""A small contact sheet of sampled frames, as a data URI the Dagster UI shows inline."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

THUMB_HEIGHT = 72
MAX_BYTES = 48_000  # metadata is stored with every event: keep the image small


def contact_sheet(frames: list[np.ndarray], columns: int = 4) -> bytes:
    """JPEG of uint8 [H, W, 3] frames on a grid, each scaled to THUMB_HEIGHT."""
    thumbs = []
    for frame in frames:
        image = Image.fromarray(frame)
        width = max(1, round(image.width * THUMB_HEIGHT / image.height))
        thumbs.append(image.resize((width, THUMB_HEIGHT), Image.Resampling.LANCZOS))
    cell = max(t.width for t in thumbs)
    rows = -(-len(thumbs) // columns)
    sheet = Image.new("RGB", (cell * min(columns, len(thumbs)), THUMB_HEIGHT * rows))
    for i, thumb in enumerate(thumbs):
        sheet.paste(thumb, ((i % columns) * cell, (i // columns) * THUMB_HEIGHT))
    for quality in (80, 60, 40):
        buffer = io.BytesIO()
        sheet.save(buffer, format="JPEG", quality=quality)
        if buffer.tell() <= MAX_BYTES:
            break
    return buffer.getvalue()


def markdown_image(jpeg: bytes, alt: str = "contact sheet") -> str:
    return f"![{alt}](data:image/jpeg;base64,{base64.b64encode(jpeg).decode('ascii')})"
