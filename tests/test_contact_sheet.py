"""Contact-sheet captions: the rank apart from the name, the full file name wrapped, any letter drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from alvae_pl.oracles.contact_sheet import caption_font, caption_lines, wrap_name, write_contact_sheets

NESTED = "1 2024 batch/D024_Müller_überweisung_scan-0001.tiff"  # a folder whose name starts with digits, and ü


def _drawn(text: str) -> np.ndarray:
    image = Image.new("L", (40, 20), 0)
    ImageDraw.Draw(image).text((2, 2), text, fill=255, font=caption_font())
    return np.asarray(image)


def test_a_caption_is_the_rank_then_the_whole_name_wrapped_to_the_tile() -> None:
    lines = caption_lines(7, NESTED, 96)
    assert lines[0] == "#7"  # the rank on a line of its own: never run into a name starting with digits
    assert "".join(lines[1:]) == NESTED  # nothing cut
    font = caption_font()
    assert all(font.getlength(line) <= 96 for line in lines[1:]) and len(lines) > 2
    assert lines[1] == "1 2024 batch/"  # broken after the folder's slash, where it fits
    assert all(line[-1] in "/_-. " for line in lines[1:-1])
    parts = wrap_name("a" * 40, font, 30)  # no break mark: each line filled up to the width
    assert "".join(parts) == "a" * 40 and all(
        font.getlength(part) <= 30 < font.getlength(part + "a") for part in parts[:-1]
    )


def test_the_caption_font_draws_accented_letters_not_boxes() -> None:
    missing = _drawn("\U000f0001")  # a private-use code point: no font has it, it draws the "missing glyph" box
    for letter, plain in (("ü", "u"), ("é", "e"), ("ø", "o")):
        drawn = _drawn(letter)
        assert not np.array_equal(drawn, missing) and not np.array_equal(drawn, _drawn(plain))


def test_sheets_grow_to_hold_the_longest_caption_of_the_page(tmp_path: Path) -> None:
    images = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    names = ["a.png", NESTED, "b.png"]
    [path] = write_contact_sheets(images, names, tmp_path / "query_round_1", tile=96, font_size=11)
    lines = len(caption_lines(2, NESTED, 96))
    with Image.open(path) as sheet:
        assert sheet.size == (3 * (96 + 4) + 4, 96 + lines * 14 + 2 * 4)
        caption = np.asarray(sheet.convert("L"))[4 + 96 :, 4 + 100 : 4 + 100 + 96]  # the second tile's caption
    inked_rows = np.flatnonzero((caption < 128).any(axis=1))
    assert inked_rows.max() > (lines - 1) * 14  # its last line is drawn, not cut
