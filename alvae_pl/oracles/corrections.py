"""An expert's corrections of labels already given: the run folder's ``corrections.csv``, read when a run continues.

The file has the layout of an answers file (``file`` plus ``label``, or ``file`` plus one 0/1 column per finding);
the other columns of a query file or of ``labeled.csv`` (:data:`OTHER_COLUMNS`) are skipped, so rows copied from
either may be pasted as they are. Each image at most once, a known class name or 0/1 findings, and only images that
are labeled already. The run never writes the file.

An answered ``query_round_<r>.csv`` is not read again: :func:`edited_query_rows` finds the rows whose label cells an
expert changed after the fact, so that the run can say, in one line, to put them in the corrections file instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from alvae_pl.data.label_pool import LabelOrigin
from alvae_pl.data.label_table import parse_labels, read_label_rows
from alvae_pl.oracles.answer_check import QUERY_INFO_COLUMNS
from alvae_pl.oracles.oracle import Answers

if TYPE_CHECKING:
    from alvae_pl.data.datamodule import ActiveDataModule

CORRECTIONS_FILENAME = "corrections.csv"
#: Columns of a corrections file that are neither the file nor a label: a query file's and ``labeled.csv``'s.
OTHER_COLUMNS = (*QUERY_INFO_COLUMNS, "round", "dataset_index", "origin")
_QUERY_NAME = re.compile(r"query_round_(\d+)\.csv")


def read_corrections(path: Path, datamodule: ActiveDataModule) -> Answers:
    """The corrections in ``path`` that change a label (a row that repeats the label the run holds changes nothing).

    Returns:
        Pool positions int64 ``[c]`` and their corrected targets (int64 ``[c]`` or ``[c, K]``), in the file's order.

    Raises:
        ValueError: one line naming the row and what to change: a file named twice, an unknown class, a finding that
            is not 0 or 1, a row without a label, an image that is not in the pool or has no label yet.
        FileNotFoundError: ``path`` does not exist.
    """
    table = read_label_rows(path)
    data = datamodule.data
    labels = parse_labels(
        table,
        data.task,
        data.class_names,
        ignore=OTHER_COLUMNS,
        unknown_hint="fix the cell: a run's classes are fixed when it starts",
    )
    where = {name: position for position, name in enumerate(datamodule.pool_files or ())}
    labeled = set(datamodule.pool.labeled.tolist())
    positions = []
    for name, line in zip(labels.files, labels.lines, strict=True):
        if name not in where:
            raise ValueError(f"{table.where(line)}: {name} is not an image of this run's pool; delete the row")
        if where[name] not in labeled:
            raise ValueError(
                f"{table.where(line)}: {name} has no label yet (it is not in labeled.csv), so there is nothing to "
                "correct; delete the row (the run asks for it when a heuristic picks it)"
            )
        positions.append(where[name])
    positions = torch.tensor(positions, dtype=torch.int64)
    if len(positions) == 0:  # just a header: nothing to correct
        return Answers(positions=positions, targets=labels.targets)
    held = datamodule.pool_targets(positions).cpu()
    changed = (held != labels.targets).reshape(len(positions), -1).any(dim=1)
    return Answers(positions=positions[changed], targets=labels.targets[changed])


def edited_query_rows(run_folder: Path, datamodule: ActiveDataModule, last_round: int) -> list[tuple[Path, int]]:
    """The answered query files (``query_round_<r>.csv`` with ``r <= last_round``) whose label cells now differ from
    the labels the run holds, with how many rows differ. A blank row (an image left unanswered) is no edit, nor is a
    row of an image corrected since (the corrections file speaks for it). A file that no longer reads as answers
    counts all its rows.
    """
    data = datamodule.data
    pool = datamodule.pool
    where = {name: position for position, name in enumerate(datamodule.pool_files or ())}
    labeled = dict(zip(pool.labeled.tolist(), pool.labeled_origins.tolist(), strict=True))
    edited = []
    for path in sorted(run_folder.glob("query_round_*.csv"), key=lambda p: p.name):
        match = _QUERY_NAME.fullmatch(path.name)
        if match is None or int(match.group(1)) > last_round:
            continue
        table = None
        try:
            table = read_label_rows(path)
            labels = parse_labels(table, data.task, data.class_names, ignore=QUERY_INFO_COLUMNS, allow_blank=True)
        except ValueError:
            edited.append((path, len(table.rows) if table is not None else 1))
            continue
        differ = 0
        for name, target in zip(labels.files, labels.targets, strict=True):
            position = where.get(name)
            if position is not None and labeled.get(position) == LabelOrigin.CORRECTION:
                continue
            held = None if position not in labeled else datamodule.pool_targets(torch.tensor([position]))[0].cpu()
            differ += held is None or not torch.equal(held, target)
        if differ:
            edited.append((path, differ))
    return edited
