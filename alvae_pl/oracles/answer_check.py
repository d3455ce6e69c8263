"""The one check every expert's answers go through, whether they come from a CSV file or an annotation tool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alvae_pl.data.label_table import LabelRows, parse_labels
from alvae_pl.oracles.oracle import Answers, Query

if TYPE_CHECKING:
    from alvae_pl.data.datamodule import ActiveDataModule

#: Columns of an answers table that are neither the file nor a label: the query's information for the expert.
QUERY_INFO_COLUMNS = ("rank", "pool_index", "score")


def check_answers(
    table: LabelRows,
    asked: Sequence[str],
    query: Query,
    datamodule: ActiveDataModule,
    remove_hint: str = "delete the row",
    unknown_hint: str = "fix the cell: a run's classes are fixed when it starts",
) -> dict[str, Tensor]:
    """The answered images of ``table``, checked against the query: every asked image at most once, known class
    names, 0/1 findings (multi-label), and no image that was not asked. Rows with empty label cells are unanswered.

    Args:
        table: the answers, in the labels-CSV layout (``file`` plus the label columns, :data:`QUERY_INFO_COLUMNS`
            ignored).
        asked: the query's image names, in picking order (``[b]``, one per ``query.positions``).
        query: the open query.
        datamodule: knows the task and the class names.
        remove_hint: what to do with an answer for an image that was not asked.
        unknown_hint: what to do with an unknown class name.

    Returns:
        Image name -> int64 target (``[]`` class index or ``[K]`` 0/1 findings), for the answered images.

    Raises:
        ValueError: one line naming the row and what to change.
    """
    data = datamodule.data
    labels = parse_labels(
        table, data.task, data.class_names, ignore=QUERY_INFO_COLUMNS, allow_blank=True, unknown_hint=unknown_hint
    )
    wanted = set(asked)
    for name, line in zip(labels.files, labels.lines, strict=True):
        if name not in wanted:
            raise ValueError(
                f"{table.where(line)}: {name} was not asked for in round {query.round_index}; {remove_hint}"
            )
    return dict(zip(labels.files, labels.targets, strict=True))


def answered_part(query: Query, asked: Sequence[str], answered: dict[str, Tensor]) -> Answers:
    """The answers to ``query``'s answered images (``answered`` from :func:`check_answers`), in picking order."""
    keep = [i for i, name in enumerate(asked) if name in answered]
    return Answers(positions=query.positions[keep], targets=torch.stack([answered[asked[i]] for i in keep]))
