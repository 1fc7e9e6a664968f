"""A small contact sheet of sampled frames, each labelled with its clip id.

The Dagster UI shows it behind "[Show Markdown]" (a data URI in Markdown metadata: Dagster has
no inline image metadata) and as a JPEG file whose path is in the metadata."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

THUMB_HEIGHT = 72
LABEL_HEIGHT = 14
MAX_BYTES = 48_000  # metadata is stored with every event: keep the image small


def _label(text: str, width: int) -> str:
    """The end of `text` (a clip id's file name says most), cut to fit `width` pixels."""
    font = ImageFont.load_default()
    text = text.rsplit("/", 1)[-1]
    while text and font.getlength(text) > width - 4:
        text = text[1:]
    return text


def contact_sheet(frames: list[np.ndarray], labels: list[str] | None = None,
                  columns: int = 4) -> bytes:
    """JPEG of uint8 [H, W, 3] frames on a grid, each scaled to THUMB_HEIGHT, with its label
    (clip id) written under it."""
    thumbs = []
    for frame in frames:
        image = Image.fromarray(frame)
        width = max(1, round(image.width * THUMB_HEIGHT / image.height))
        thumbs.append(image.resize((width, THUMB_HEIGHT), Image.Resampling.LANCZOS))
    cell = max(max(t.width for t in thumbs), 96)
    row_height = THUMB_HEIGHT + (LABEL_HEIGHT if labels else 0)
    rows = -(-len(thumbs) // columns)
    sheet = Image.new("RGB", (cell * min(columns, len(thumbs)), row_height * rows))
    draw = ImageDraw.Draw(sheet)
    for i, thumb in enumerate(thumbs):
        x, y = (i % columns) * cell, (i // columns) * row_height
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y))
        if labels:
            draw.text((x + 2, y + THUMB_HEIGHT + 1), _label(labels[i], cell), fill="white")
    for quality in (80, 60, 40):
        buffer = io.BytesIO()
        sheet.save(buffer, format="JPEG", quality=quality)
        if buffer.tell() <= MAX_BYTES:
            break
    return buffer.getvalue()


def markdown_image(jpeg: bytes, alt: str = "contact sheet") -> str:
    return f"![{alt}](data:image/jpeg;base64,{base64.b64encode(jpeg).decode('ascii')})"
