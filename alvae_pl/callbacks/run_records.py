"""The human-readable record of a run: ``history.csv`` and ``labeled.csv``, always rewritten whole."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
)
LABELED_COLUMNS = ("round", "pool_index", "dataset_index", "score")


def write_csv_atomically(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Write to a temporary file and rename it over ``path``: a reader (or a killed run) never sees half a file.

    The files are regenerated from the checkpointed state every time, so a run resumed after a crash
    rewrites them to exactly what an uninterrupted run would hold.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _format(row.get(k)) for k in columns})
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
