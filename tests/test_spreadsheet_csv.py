"""Labels CSVs as spreadsheets save them: semicolons, tabs, a byte-order mark, CRLF line ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.data.digits_folder import write_digits_folder
from alvae_pl.data.label_table import parse_labels, read_label_rows
from alvae_pl.data.sources import FolderSource
from alvae_pl.oracles import HumanOracle, Query

ROWS = [["rank", "pool_index", "file", "score", "label"], ["1", "7", "scan 1.png", "29,15", "cat"],
        ["2", "3", "ü/scan;2.png", "28,4", "dog"]]  # fmt: skip


def _spreadsheet(delimiter: str, bom: bool, newline: str) -> bytes:
    def cell(text: str) -> str:
        return f'"{text}"' if delimiter in text else text

    lines = [delimiter.join(cell(c) for c in row) for row in ROWS]
    return ("\ufeff" if bom else "").encode() + (newline.join(lines) + newline).encode()


@pytest.mark.parametrize(
    ("delimiter", "bom", "newline"),
    [
        (",", False, "\n"),  # as the run writes it
        (";", False, "\n"),  # Excel where the decimal mark is a comma
        (",", True, "\n"),  # "CSV UTF-8" from Excel: a byte-order mark
        (",", False, "\r\n"),  # Windows line ends
        (";", True, "\r\n"),  # all three at once: Excel on a German Windows
        ("\t", False, "\n"),  # tab-separated text
    ],
    ids=["comma", "semicolon", "bom", "crlf", "excel-de", "tab"],
)
def test_each_spreadsheet_dialect_reads_the_same_cells(tmp_path: Path, delimiter: str, bom: bool, newline: str):
    path = tmp_path / "answers.csv"
    path.write_bytes(_spreadsheet(delimiter, bom, newline))
    table = read_label_rows(path)
    assert table.columns == tuple(ROWS[0])
    assert [cells for _, cells in table.rows] == [dict(zip(ROWS[0], row, strict=True)) for row in ROWS[1:]]
    labels = parse_labels(table, "multiclass", ["cat", "dog"], ignore=("rank", "pool_index", "score"))
    assert labels.files == ("scan 1.png", "ü/scan;2.png") and labels.targets.tolist() == [0, 1]
    assert labels.lines == (2, 3)


def test_a_header_without_a_file_column_in_any_dialect_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_text("rank;image;label\n1;a.png;cat\n")
    with pytest.raises(ValueError, match=r"the header rank;image;label has no 'file' column"):
        read_label_rows(path)


def test_an_expert_answering_from_excel_with_semicolons_is_understood(tmp_path: Path) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    source = FolderSource(
        str(lab / "images"), str(lab / "labels.csv"), str(lab / "val.csv"), val_images=str(lab / "val")
    )
    datamodule = ActiveDataModule(source)
    asked = datamodule.pool.unlabeled[[4, 0, 2]]
    query = Query(round_index=1, positions=asked, scores=torch.tensor([3.0, 2.0, 1.0]))
    oracle = HumanOracle()
    assert "3 of 3 images" in oracle.answer(query, datamodule, tmp_path)
    truth = {row.split(",")[0]: row.split(",")[1] for row in (lab / "answer_key.csv").read_text().splitlines()[1:]}
    files = [datamodule.pool_files[p] for p in asked.tolist()]
    rows = [f"{r};{p};{files[r - 1]};{r},5;{truth[files[r - 1]]}" for r, p in enumerate(asked.tolist(), 1)]
    saved = "\ufeff" + "\r\n".join(["rank;pool_index;file;score;label", *rows]) + "\r\n"
    (tmp_path / "query_round_1.csv").write_bytes(saved.encode())  # saved over the query file, as Excel does
    answers = oracle.answer(query, datamodule, tmp_path)
    assert answers.positions.tolist() == asked.tolist()
    assert answers.targets.tolist() == [int(truth[name]) for name in files]
