"""A small contact sheet of sampled frames, as a data URI the Dagster UI shows inline."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

THUMB_HEIGHT = 72
MAX_BYTES = 48_000  # metadata is stored with every event: keep the image small
LABEL_LINE = 12  # pixels per label line (PIL's built-in bitmap font is 11 high)
LABEL_MIN_WIDTH = 208  # a cell is at least this wide when it is labelled (34 characters)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text`, its start cut off with "…" until it fits `width` (a clip id's end says most)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text


def contact_sheet(frames: list[np.ndarray], columns: int = 4,
                  labels: list[list[str]] | None = None) -> bytes:
    """JPEG of uint8 [H, W, 3] frames on a grid, each scaled to THUMB_HEIGHT, with the lines of
    `labels[i]` (e.g. clip id and scores) printed under frame i."""
    thumbs = []
    for frame in frames:
        image = Image.fromarray(frame)
        width = max(1, round(image.width * THUMB_HEIGHT / image.height))
        thumbs.append(image.resize((width, THUMB_HEIGHT), Image.Resampling.LANCZOS))
    lines = max((len(label) for label in labels), default=0) if labels else 0
    cell = max(t.width for t in thumbs)
    if lines:
        cell = max(cell, LABEL_MIN_WIDTH)
    cell_height = THUMB_HEIGHT + lines * LABEL_LINE
    rows = -(-len(thumbs) // columns)
    sheet = Image.new("RGB", (cell * min(columns, len(thumbs)), cell_height * rows))
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for i, thumb in enumerate(thumbs):
        x, y = (i % columns) * cell, (i // columns) * cell_height
        sheet.paste(thumb, (x, y))
        for n, text in enumerate(labels[i] if labels else []):
            draw.text((x + 2, y + THUMB_HEIGHT + n * LABEL_LINE), _fit(draw, text, font, cell - 4),
                      fill=(235, 235, 235), font=font)
    for quality in (80, 60, 40):
        buffer = io.BytesIO()
        sheet.save(buffer, format="JPEG", quality=quality)
        if buffer.tell() <= MAX_BYTES:
            break
    return buffer.getvalue()


def thumbnail_png(frame: np.ndarray) -> bytes:
    """A frame scaled to the sheet's cell height, as PNG: what the store keeps of a clip's
    frames for the sheet once the frames themselves are dropped (a few kB a clip)."""
    image = Image.fromarray(frame)
    width = max(1, round(image.width * THUMB_HEIGHT / image.height))
    buffer = io.BytesIO()
    image.resize((width, THUMB_HEIGHT), Image.Resampling.LANCZOS).save(buffer, format="PNG")
    return buffer.getvalue()


def markdown_image(jpeg: bytes, alt: str = "contact sheet") -> str:
    return f"![{alt}](data:image/jpeg;base64,{base64.b64encode(jpeg).decode('ascii')})"
