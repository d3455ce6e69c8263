"""The human-readable record of a run: ``history.csv`` and ``labeled.csv``, always rewritten whole."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from alvae_pl.atomic_files import write_csv
from alvae_pl.data.label_pool import origin_text
from alvae_pl.data.label_table import FILE_COLUMN, label_cells, label_columns

if TYPE_CHECKING:
    from alvae_pl.data.datamodule import ActiveDataModule

HISTORY_COLUMNS = (
    "round",
    "labels",
    "epochs",
    "train_accuracy",
    "val_accuracy",
    "val_auroc",
    "test_accuracy",
    "test_auroc",
    "train_seconds",
    "eval_seconds",
    "acquisition_seconds",
    "checkpoint_seconds",
    "vae_seconds",  # retraining a label-aware VAE at the round's start (empty without one)
    "vae_knn_accuracy",  # what its V(u) knows of the test split's classes then (models.class_knowledge)
    "vae_kmeans_nmi",
    # What the stopping criteria read (alvae_pl.stopping.StopMeasures; empty where undefined).
    "stop_kappa",
    "stop_max_uncertainty",
    "stop_mean_uncertainty",
    "stop_val_gain",
)
LABELED_COLUMNS = ("round", "pool_index", "dataset_index", "score")
#: ``labeled.csv``'s last column: how the label came (``labels file``, ``random draw``, ``answer to round <r>``).
ORIGIN_COLUMN = "origin"
#: The history columns drawn as curves against the number of labels (``al/<column>`` in the loggers).
CURVE_COLUMNS = HISTORY_COLUMNS[HISTORY_COLUMNS.index("train_accuracy") :]


def history_columns(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The columns of ``history.csv`` for ``rows``: ``HISTORY_COLUMNS``, then the columns that depend on the data
    (the per-class metrics, ``val_recall_<class>`` ...: ``models.per_class_metrics``), in the order rows hold them."""
    extra = dict.fromkeys(key for row in rows for key in row if key not in HISTORY_COLUMNS)
    return (*HISTORY_COLUMNS, *extra)


def curve_columns(row: dict[str, Any]) -> tuple[str, ...]:
    """The columns of ``row`` drawn as curves against the number of labels: ``CURVE_COLUMNS`` and the per-class
    metrics."""
    drawn = (key for key in history_columns([row]) if key in CURVE_COLUMNS or key not in HISTORY_COLUMNS)
    return tuple(key for key in drawn if key in row)


def write_csv_atomically(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``path`` whole (``alvae_pl.atomic_files``): a reader, or a killed run, never sees half a file.

    The files are regenerated from the checkpointed state every time, so a run resumed after a crash
    rewrites them to exactly what an uninterrupted run would hold. Floats keep 6 significant digits; a missing
    value or NaN is an empty cell.
    """
    write_csv(path, columns, ([row.get(column) for column in columns] for row in rows), float_format=_six_digits)


def _six_digits(value: float) -> str:
    return f"{value:.6g}"


def labeled_table(datamodule: ActiveDataModule, scores: Tensor) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """``labeled.csv``'s columns and rows: one row per labeled pool image, in labeling order.

    Columns: ``round``, ``pool_index``, ``dataset_index``, ``score`` (the heuristic's score of an acquired image;
    empty for the initial labels), ``file`` (for images read from files), the label (``label`` with the class name,
    or one 0/1 column per finding, as a labels CSV writes them) and ``origin`` (:func:`~alvae_pl.data.label_pool.
    origin_text`).

    Args:
        datamodule: the run's data and pool.
        scores: float ``[A]``: the scores of the acquired images, in labeling order (the last ``A`` labeled).
    """
    pool = datamodule.pool
    data = datamodule.data
    labeled = pool.labeled
    initial = len(labeled) - len(scores)
    padded = [math.nan] * initial + scores.tolist()
    labels = label_cells(datamodule.pool_targets(labeled).cpu(), data.task, data.class_names)
    files = datamodule.pool_files
    rows = []
    origins = zip(pool.labeled_origins.tolist(), pool.origin_rounds.tolist(), strict=True)
    for p, r, (o, at), s, cells in zip(
        labeled.tolist(), pool.labeled_rounds.tolist(), origins, padded, labels, strict=True
    ):
        row: dict[str, Any] = {"round": r, "pool_index": p, "dataset_index": int(pool.dataset_indices[p]), "score": s}
        if files is not None:  # images read from files: name each, for the people who label them
            row[FILE_COLUMN] = files[p]
        rows.append(row | cells | {ORIGIN_COLUMN: origin_text(o, at)})
    names = (FILE_COLUMN,) if files is not None else ()
    return (*LABELED_COLUMNS, *names, *label_columns(data.task, data.class_names), ORIGIN_COLUMN), rows
