"""Contact sheets: the images an expert is asked to label, as numbered tiles on one PNG per page."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from alvae_pl.atomic_files import atomic_write_bytes

_CAPTION_HEIGHT = 14
_GAP = 4


def write_contact_sheets(
    images: Tensor,
    captions: Sequence[str],
    stem: Path,
    per_sheet: int = 100,
    columns: int = 10,
    tile: int = 96,
) -> list[Path]:
    """Writes ``images`` in order as tiles with captions, ``per_sheet`` per PNG.

    Args:
        images: uint8 ``[n, C, H, W]`` with ``C`` 1 or 3.
        captions: one short caption per image (the query's rank and file name).
        stem: ``<folder>/<name>``; sheets are ``<name>.png`` or, for more than one, ``<name>_<k>.png``.
        per_sheet: tiles per PNG.
        columns: tiles per row.
        tile: side of each tile in pixels; images are scaled to it without smoothing, so pixels stay visible.

    Returns:
        The files written, in order. A sheet that already exists is left as it is.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    font = ImageFont.load_default()
    pages = [range(start, min(start + per_sheet, len(images))) for start in range(0, len(images), per_sheet)]
    written = []
    for page_number, page in enumerate(pages, start=1):
        path = stem.with_name(f"{stem.name}.png" if len(pages) == 1 else f"{stem.name}_{page_number}.png")
        written.append(path)
        if path.exists():
            continue
        rows = -(-len(page) // columns)
        width = min(columns, len(page)) * (tile + _GAP) + _GAP
        height = rows * (tile + _CAPTION_HEIGHT + _GAP) + _GAP
        sheet = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(sheet)
        for slot, index in enumerate(page):
            x = _GAP + (slot % columns) * (tile + _GAP)
            y = _GAP + (slot // columns) * (tile + _CAPTION_HEIGHT + _GAP)
            pixels = images[index].permute(1, 2, 0).cpu().numpy()
            picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            sheet.paste(picture.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST), (x, y))
            draw.text((x, y + tile + 1), _fit(draw, captions[index], font, tile), fill="black", font=font)
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
    return written


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
