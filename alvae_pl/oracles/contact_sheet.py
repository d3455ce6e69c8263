"""Contact sheets: the images an expert is asked to label, as numbered tiles on one PNG per page.

Each tile's caption is its rank in the query (bold, on a line of its own) and the image's full file name, wrapped
over as many lines as it needs (after a ``/``, ``_``, ``-``, ``.`` or space where one fits). The text is drawn in
DejaVu Sans, which ships with matplotlib and covers Latin, Greek and Cyrillic letters (``ü``, ``é``, ``ø``...).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from alvae_pl.atomic_files import atomic_write_bytes

_GAP = 4
#: Characters after which a long file name is preferably broken.
_BREAK_AFTER = "/_-. "


@cache
def caption_font(size: int = 11, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (regular or bold) at ``size`` pixels, from matplotlib's own fonts."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def wrap_name(name: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """``name`` cut into lines no wider than ``width`` pixels, nothing left out: ``"".join(lines) == name``.

    A line ends after the last ``/``, ``_``, ``-``, ``.`` or space that lets it fit, or, when it has none, after the
    last character that fits (at least one character per line).
    """
    lines: list[str] = []
    line = ""
    for character in name:
        while line and font.getlength(line + character) > width:
            cut = max(line.rfind(mark) for mark in _BREAK_AFTER) + 1  # 0: no mark, cut after the last character
            lines.append(line[: cut or len(line)])
            line = line[cut or len(line) :]
        line += character
    return [*lines, line]


def caption_lines(rank: int, name: str, width: int, size: int = 11) -> list[str]:
    """A tile's caption: ``#<rank>`` on the first line (drawn bold), then the file name wrapped to ``width``."""
    return [f"#{rank}", *wrap_name(name, caption_font(size), width)]


def write_contact_sheets(
    images: Tensor,
    names: Sequence[str],
    stem: Path,
    per_sheet: int = 100,
    columns: int = 10,
    tile: int = 96,
    font_size: int = 11,
) -> list[Path]:
    """Writes ``images`` in order as tiles captioned with their rank (1, 2, ... across sheets) and file name,
    ``per_sheet`` per PNG.

    Args:
        images: uint8 ``[n, C, H, W]`` with ``C`` 1 or 3.
        names: the file name of each image, as the query file writes it.
        stem: ``<folder>/<name>``; sheets are ``<name>.png`` or, for more than one, ``<name>_<k>.png``.
        per_sheet: tiles per PNG.
        columns: tiles per row.
        tile: side of each tile in pixels; images are scaled to it without smoothing, so pixels stay visible.
        font_size: caption text height in pixels.

    Returns:
        The files written, in order. A sheet that already exists is left as it is.
    """
    if len(images) != len(names):
        raise ValueError(f"{len(images)} images but {len(names)} names")
    regular, bold = caption_font(font_size), caption_font(font_size, bold=True)
    line_height = font_size + 3
    pages = [range(start, min(start + per_sheet, len(images))) for start in range(0, len(images), per_sheet)]
    written = []
    for page_number, page in enumerate(pages, start=1):
        path = stem.with_name(f"{stem.name}.png" if len(pages) == 1 else f"{stem.name}_{page_number}.png")
        written.append(path)
        if path.exists():
            continue
        captions = {index: caption_lines(index + 1, names[index], tile, font_size) for index in page}
        caption_height = max(len(lines) for lines in captions.values()) * line_height
        rows = -(-len(page) // columns)
        width = min(columns, len(page)) * (tile + _GAP) + _GAP
        height = rows * (tile + caption_height + _GAP) + _GAP
        sheet = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(sheet)
        for slot, index in enumerate(page):
            x = _GAP + (slot % columns) * (tile + _GAP)
            y = _GAP + (slot // columns) * (tile + caption_height + _GAP)
            pixels = images[index].permute(1, 2, 0).cpu().numpy()
            picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            sheet.paste(picture.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST), (x, y))
            for number, line in enumerate(captions[index]):
                font = bold if number == 0 else regular
                draw.text((x, y + tile + 1 + number * line_height), line, fill="black", font=font)
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
    return written
