"""The human-readable record of a run: ``history.csv`` and ``labeled.csv``, always rewritten whole."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alvae_pl.atomic_files import write_csv

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
#: The history columns drawn as curves against the number of labels (``al/<column>`` in the loggers).
CURVE_COLUMNS = HISTORY_COLUMNS[HISTORY_COLUMNS.index("train_accuracy") :]


def write_csv_atomically(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``path`` whole (``alvae_pl.atomic_files``): a reader, or a killed run, never sees half a file.

    The files are regenerated from the checkpointed state every time, so a run resumed after a crash
    rewrites them to exactly what an uninterrupted run would hold. Floats keep 6 significant digits; a missing
    value or NaN is an empty cell.
    """
    write_csv(path, columns, ([row.get(column) for column in columns] for row in rows), float_format=_six_digits)


def _six_digits(value: float) -> str:
    return f"{value:.6g}"
