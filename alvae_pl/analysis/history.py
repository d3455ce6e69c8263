"""Read the per-round histories that active-learning runs write, without pandas.

An experiment folder holds one folder per variant (heuristic with or without VAE features) and one folder per
seed inside it::

    <root>/<experiment>/<variant>/seed_<k>/history.csv

``load_experiment`` turns that tree into ``Runs``: ``{variant: {seed: History}}``, sorted by variant name
and by seed, which is what the statistics and plotting functions take.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alvae_pl.atomic_files import write_csv
from alvae_pl.callbacks.run_records import HISTORY_COLUMNS
from alvae_pl.run_folder import HISTORY_FILENAME

# Counts are kept as integers so that label counts can be matched across runs exactly.
INTEGER_COLUMNS: tuple[str, ...] = ("round", "labels", "epochs")
REQUIRED_COLUMNS: tuple[str, ...] = ("round", "labels")
_SEED_FOLDER = re.compile(r"^seed_(\d+)$")


@dataclass(frozen=True)
class History:
    """The history of one active-learning run: one entry per round in every column.

    Args:
        columns: column name -> array of shape ``[R]`` (R rounds). ``round``, ``labels`` and ``epochs`` are
            int64; every other column is float64 with NaN where the file had an empty cell.
        source: the file it was read from, for error messages; None for a history built in memory.
    """

    columns: Mapping[str, np.ndarray]
    source: Path | None = None

    def __post_init__(self) -> None:
        where = f" in {self.source}" if self.source is not None else ""
        missing = [name for name in REQUIRED_COLUMNS if name not in self.columns]
        if missing:
            raise ValueError(f"history{where} lacks column(s) {missing}; a history needs at least {REQUIRED_COLUMNS}")
        shapes = {name: np.asarray(values).shape for name, values in self.columns.items()}
        distinct = set(shapes.values())
        if len(distinct) != 1 or len(distinct.pop()) != 1:
            raise ValueError(f"history{where} columns must be 1-d arrays of one length, got shapes {shapes}")
        labels = np.asarray(self.columns["labels"])
        if len(np.unique(labels)) != len(labels):
            raise ValueError(
                f"history{where} repeats a label count ({labels.tolist()}); each round must add labels, "
                "remove the duplicated rows (e.g. left by a resumed run) and retry"
            )

    @property
    def num_rounds(self) -> int:
        """Number of rounds (rows) R."""
        return len(self.columns["labels"])

    @property
    def labels(self) -> np.ndarray:
        """Number of labeled images per round, int64 ``[R]``."""
        return np.asarray(self.columns["labels"], dtype=np.int64)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def column(self, name: str) -> np.ndarray:
        """One column, shape ``[R]``; a ValueError names the available columns if ``name`` is not one."""
        if name not in self.columns:
            where = f" in {self.source}" if self.source is not None else ""
            raise ValueError(f"unknown column {name!r}{where}; choose one of {list(self.columns)}")
        return np.asarray(self.columns[name])

    def values_by_labels(self, metric: str) -> dict[int, float]:
        """``{number of labels: metric value}`` for every round, NaN kept."""
        return {int(n): float(v) for n, v in zip(self.labels, self.column(metric), strict=True)}


Runs = dict[str, dict[int, History]]
"""``{variant name: {seed: History}}``, as returned by :func:`load_experiment`."""


def _parse_cell(text: str, name: str, row: int, path: Path) -> float:
    text = text.strip()
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{path}: row {row} column {name!r} holds {text!r}, expected a number or an empty cell"
        ) from None


def load_history(path: str | Path) -> History:
    """Read one ``history.csv`` (header row, then one row per round) into a :class:`History`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no history file at {path}; an active-learning run writes it in its run folder")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path} is empty; expected a header row such as {','.join(HISTORY_COLUMNS)}")
        header = [name.strip() for name in header]
        if len(set(header)) != len(header):
            raise ValueError(f"{path} has a repeated column name in its header {header}")
        cells: dict[str, list[float]] = {name: [] for name in header}
        for row_number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}: row {row_number} has {len(row)} cells, the header has {len(header)}")
            for name, text in zip(header, row, strict=True):
                cells[name].append(_parse_cell(text, name, row_number, path))
    columns: dict[str, np.ndarray] = {}
    for name, values in cells.items():
        array = np.asarray(values, dtype=np.float64)
        if name in INTEGER_COLUMNS:
            if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
                raise ValueError(f"{path}: column {name!r} must hold whole numbers in every row, got {values}")
            array = array.astype(np.int64)
        columns[name] = array
    return History(columns=columns, source=path)


def load_experiment(folder: str | Path) -> Runs:
    """Load every run of one experiment.

    Args:
        folder: ``<root>/<experiment>``, holding ``<variant>/seed_<k>/history.csv``.

    Returns:
        ``{variant: {seed: History}}``, variants in name order, seeds ascending. Seed folders without a
        ``history.csv`` yet (a run still in its first round) are skipped; variants without any run are left out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"experiment folder {folder} does not exist; pass <root>/<experiment>")
    runs: Runs = {}
    for variant_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        seeds: dict[int, History] = {}
        for seed_dir in variant_dir.iterdir():
            match = _SEED_FOLDER.match(seed_dir.name)
            if match and seed_dir.is_dir() and (seed_dir / HISTORY_FILENAME).is_file():
                seeds[int(match.group(1))] = load_history(seed_dir / HISTORY_FILENAME)
        if seeds:
            runs[variant_dir.name] = dict(sorted(seeds.items()))
    if not runs:
        raise FileNotFoundError(
            f"no runs under {folder}: expected {folder}/<variant>/seed_<k>/{HISTORY_FILENAME}; "
            "run the experiment first or point at the experiment folder"
        )
    return runs


def check_metric(runs: Runs, metric: str) -> None:
    """Raise a ValueError unless every loaded history has column ``metric``."""
    if not runs or not any(runs.values()):
        raise ValueError("no runs given; load them with load_experiment(folder)")
    for variant, seeds in runs.items():
        for seed, history in seeds.items():
            if metric not in history.columns:
                raise ValueError(
                    f"metric {metric!r} is not a column of {variant}/seed_{seed}; "
                    f"choose one of {[c for c in history.column_names if c not in INTEGER_COLUMNS]}"
                )


def long_format(runs: Runs, metrics: Sequence[str] | None = None) -> list[dict[str, str | int | float]]:
    """Tidy rows ``{variant, seed, round, labels, metric, value}``, one per run, round and metric.

    Args:
        runs: as returned by :func:`load_experiment`.
        metrics: columns to include; default every non-integer column of each history.
    """
    if metrics is not None:
        for metric in metrics:
            check_metric(runs, metric)
    rows: list[dict[str, str | int | float]] = []
    for variant, seeds in runs.items():
        for seed, history in seeds.items():
            names = metrics if metrics is not None else [c for c in history.column_names if c not in INTEGER_COLUMNS]
            rounds = history.column("round")
            for metric in names:
                values = history.column(metric)
                for index in range(history.num_rounds):
                    rows.append(
                        {
                            "variant": variant,
                            "seed": seed,
                            "round": int(rounds[index]),
                            "labels": int(history.labels[index]),
                            "metric": metric,
                            "value": float(values[index]),
                        }
                    )
    return rows


def write_long_csv(runs: Runs, path: str | Path, metrics: Sequence[str] | None = None) -> Path:
    """Write :func:`long_format` rows to ``path`` atomically."""
    header = ("variant", "seed", "round", "labels", "metric", "value")
    rows = long_format(runs, metrics)
    return write_csv(path, header, ([row[name] for name in header] for row in rows))
