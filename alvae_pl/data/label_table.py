"""Labels as a person writes them: a CSV with one row per image, read and checked with one-line errors.

Two layouts, told apart by the header:

- multi-class: a ``file`` column and a ``label`` column holding the class name (``file,label`` /
  ``img_0007.png,pneumonia``);
- multi-label: a ``file`` column and one column per finding holding ``0`` or ``1``
  (``file,effusion,mass`` / ``img_0007.png,1,0``).

Other columns named in ``ignore`` (the query files' ``rank``, ``pool_index``, ``score``) are skipped. Every
error names the CSV file, the line and what to change.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from alvae_pl.data.image_data import UNKNOWN_TARGET, TaskKind

FILE_COLUMN = "file"
LABEL_COLUMN = "label"


@dataclass(frozen=True)
class LabelRows:
    """The raw cells of a labels CSV.

    Attributes:
        path: the file read (or, for answers that come from elsewhere, what messages call their source).
        columns: the header, stripped.
        rows: ``(line number, {column: stripped cell})`` per data row; line 1 is the header.
        row_word: what messages call a row's number: ``line`` in a CSV (an annotation tool's rows may be tasks).
    """

    path: Path | str
    columns: tuple[str, ...]
    rows: tuple[tuple[int, dict[str, str]], ...]
    row_word: str = "line"

    def where(self, number: int) -> str:
        """Where row ``number`` is, for a message: ``answers.csv line 7``."""
        return f"{self.path} {self.row_word} {number}"

    def task(self) -> TaskKind:
        """Multi-class when the header has a ``label`` column, else multi-label (one column per finding)."""
        return "multiclass" if LABEL_COLUMN in self.columns else "multilabel"

    def finding_columns(self, ignore: Sequence[str] = ()) -> tuple[str, ...]:
        """The multi-label layout's finding columns, in header order."""
        return tuple(c for c in self.columns if c != FILE_COLUMN and c not in ignore)

    def class_names(self) -> set[str]:
        """The class names the multi-class layout's ``label`` column uses (blank cells skipped)."""
        return {cells[LABEL_COLUMN] for _, cells in self.rows if cells.get(LABEL_COLUMN)}


@dataclass(frozen=True)
class Labels:
    """Parsed labels: ``files[i]`` has target ``targets[i]`` (int64 ``[n]`` class indices or ``[n, K]`` 0/1).

    Attributes:
        files: file names as written in the CSV, in row order.
        targets: int64 ``[n]`` or ``[n, K]``.
        lines: the CSV line of each row, for messages.
        blank: files whose label cells were all empty (only when blanks are allowed), in row order.
    """

    files: tuple[str, ...]
    targets: Tensor
    lines: tuple[int, ...]
    blank: tuple[str, ...] = ()


def read_label_rows(path: str | Path) -> LabelRows:
    """Reads a labels CSV's header and cells, as a spreadsheet may save it: comma, semicolon or tab delimited
    (whichever splits the header into a ``file`` column), with or without a byte-order mark, ``\n`` or ``\r\n``
    line ends.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not UTF-8 text, has no header or no ``file`` column, or names a column twice.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give a CSV with a '{FILE_COLUMN}' column and the labels")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: a spreadsheet's byte-order mark
            text = handle.read()
        lines = list(csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text)))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path} is not a readable CSV file ({type(error).__name__}): save it as UTF-8 CSV") from None
    if not lines:
        raise ValueError(f"{path} is empty: its first line must be a header such as '{FILE_COLUMN},{LABEL_COLUMN}'")
    columns = tuple(cell.strip() for cell in lines[0])
    if FILE_COLUMN not in columns:
        raise ValueError(f"{path}: the header {','.join(columns)} has no '{FILE_COLUMN}' column naming each image")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ValueError(f"{path}: the header names column(s) {', '.join(repeated)} twice; keep one of each")
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue  # blank lines, e.g. a trailing newline added by an editor
        if len(cells) > len(columns):
            raise ValueError(f"{path} line {number}: {len(cells)} cells but the header has {len(columns)} columns")
        padded = [cell.strip() for cell in cells] + [""] * (len(columns) - len(cells))
        rows.append((number, dict(zip(columns, padded, strict=True))))
    return LabelRows(path=path, columns=columns, rows=tuple(rows))


#: The delimiters a spreadsheet may save a CSV with: comma, semicolon (Excel where the decimal mark is a comma), tab.
DELIMITERS = (",", ";", "\t")


def _delimiter(text: str) -> str:
    """The delimiter whose split of the header line yields a ``file`` column (a comma if none does: the error about
    the header then shows it as written)."""
    header = text.splitlines()[0] if text else ""
    for delimiter in DELIMITERS:
        cells = next(csv.reader([header], delimiter=delimiter), [])
        if FILE_COLUMN in (cell.strip() for cell in cells):
            return delimiter
    return ","


def parse_labels(
    table: LabelRows,
    task: TaskKind,
    class_names: Sequence[str],
    *,
    ignore: Sequence[str] = (),
    allow_blank: bool = False,
    unknown_hint: str = "fix the cell, or list every class in data.source.init_args.classes",
) -> Labels:
    """Turns the cells of a labels CSV into targets.

    Args:
        table: what :func:`read_label_rows` read.
        task: the data set's task; the CSV's layout must match it.
        class_names: the classes (multi-class) or findings (multi-label) of the data set, in target order.
        ignore: columns that are neither the file nor a label (skipped).
        allow_blank: rows whose label cells are all empty are returned in ``blank`` instead of refused.
        unknown_hint: what the unknown-class message advises.

    Raises:
        ValueError: a row without a file name, a file named twice, an unknown class, a finding that is not 0 or
            1, a row with some findings filled and others not, or a header that does not fit the task.
    """
    path = table.path
    names = tuple(class_names)
    if task == "multiclass" and LABEL_COLUMN not in table.columns:
        raise ValueError(f"{path}: the task is multi-class but the header has no '{LABEL_COLUMN}' column")
    if task == "multilabel":
        findings = table.finding_columns(ignore)
        if set(findings) != set(names):
            missing, extra = sorted(set(names) - set(findings)), sorted(set(findings) - set(names))
            raise ValueError(
                f"{path}: the finding columns must be exactly {', '.join(names)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(extra)}" if extra else "")
            )
    index = {name: i for i, name in enumerate(names)}
    seen: dict[str, int] = {}
    files, targets, lines, blank = [], [], [], []
    for number, cells in table.rows:
        name = cells[FILE_COLUMN]
        if not name:
            raise ValueError(f"{table.where(number)}: the '{FILE_COLUMN}' cell is empty; name the image")
        if name in seen:
            raise ValueError(
                f"{table.where(number)}: {name} is already in {table.row_word} {seen[name]}; keep one row per image"
            )
        seen[name] = number
        if task == "multiclass":
            label = cells[LABEL_COLUMN]
            if not label:
                if allow_blank:
                    blank.append(name)
                    continue
                raise ValueError(f"{table.where(number)}: {name} has no label; fill it in or delete the row")
            if label not in index:
                raise ValueError(
                    f"{table.where(number)}: unknown class {label!r} for {name}; known: {', '.join(names)} "
                    f"({unknown_hint})"
                )
            targets.append(index[label])
        else:
            values = [cells[finding] for finding in names]
            if not any(values) and allow_blank:
                blank.append(name)
                continue
            for finding, value in zip(names, values, strict=True):
                if value not in ("0", "1"):
                    shown = repr(value) if value else "empty"
                    raise ValueError(
                        f"{table.where(number)}: finding {finding} of {name} is {shown}; "
                        "write 1 (present) or 0 (absent)"
                    )
            targets.append([int(value) for value in values])
        files.append(name)
        lines.append(number)
    shape = (0,) if task == "multiclass" else (0, len(names))
    tensor = torch.tensor(targets, dtype=torch.int64) if targets else torch.empty(shape, dtype=torch.int64)
    return Labels(files=tuple(files), targets=tensor, lines=tuple(lines), blank=tuple(blank))


def natural_order(names: set[str] | Sequence[str]) -> tuple[str, ...]:
    """Class names sorted as a person expects: ``2`` before ``10``, then text alphabetically."""

    def key(name: str) -> list[tuple[int, int | str]]:
        return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]

    return tuple(sorted(names, key=key))


def label_columns(task: TaskKind, class_names: Sequence[str]) -> tuple[str, ...]:
    """The label columns of the layout ``task`` reads: ``label`` (multi-class) or one column per finding."""
    return (LABEL_COLUMN,) if task == "multiclass" else tuple(class_names)


def label_cells(targets: Tensor, task: TaskKind, class_names: Sequence[str]) -> list[dict[str, str | int]]:
    """Targets written back as a labels CSV holds them, the inverse of :func:`parse_labels`.

    Args:
        targets: int64 ``[n]`` class indices or ``[n, K]`` 0/1 findings; ``UNKNOWN_TARGET`` gives empty cells.
        task: the data set's task.
        class_names: the classes or findings, in target order.

    Returns:
        One ``{column: cell}`` per image, keyed by :func:`label_columns`: the class name, or 0/1 per finding.
    """
    columns = label_columns(task, class_names)
    cells: list[dict[str, str | int]] = []
    for target in targets.tolist():
        if task == "multiclass":
            cells.append({LABEL_COLUMN: "" if target == UNKNOWN_TARGET else class_names[target]})
        else:
            cells.append({c: "" if v == UNKNOWN_TARGET else int(v) for c, v in zip(columns, target, strict=True)})
    return cells
