"""Which classes the rounds asked for: the class composition of each variant's acquired images.

A heuristic's batches can be lopsided towards the common classes (Emam et al., *Active learning at the ImageNet
scale*, 2021), which the metrics alone do not show. Read from each run's ``labeled.csv`` (beside its
``history.csv``): the images labeled in rounds 1 and later, i.e. acquired, not the initial labels; per class for
multi-class runs (the ``label`` column), per finding's positives for multi-label ones (one 0/1 column each).
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from alvae_pl.analysis.history import Runs
from alvae_pl.atomic_files import write_csv
from alvae_pl.callbacks.run_records import LABELED_COLUMNS, ORIGIN_COLUMN
from alvae_pl.data.label_table import FILE_COLUMN, LABEL_COLUMN
from alvae_pl.run_folder import LABELED_FILENAME


def acquired_counts(path: Path) -> Counter[str]:
    """Images acquired per class (or positives per finding) in the ``labeled.csv`` at ``path``: rows of round >= 1
    with a known label."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        findings = [c for c in columns if c not in (*LABELED_COLUMNS, FILE_COLUMN, LABEL_COLUMN, ORIGIN_COLUMN)]
        counts: Counter[str] = Counter()
        for row in reader:
            if int(row["round"]) < 1:
                continue
            if LABEL_COLUMN in columns:
                if row[LABEL_COLUMN] != "":
                    counts[row[LABEL_COLUMN]] += 1
            else:
                counts.update(name for name in findings if row[name] == "1")
        for name in findings:  # every finding gets a count, zero included
            counts.setdefault(name, 0)
    return counts


@dataclass(frozen=True)
class ClassBalanceRow:
    """One variant's acquired images, summed over its seeds.

    ``balance`` is the normalised entropy of the class shares, ``H(p) / log K`` over the ``K`` classes seen in the
    experiment: 1 when every class was asked for equally often, lower the more lopsided the batches.
    """

    variant: str
    seeds: int
    counts: dict[str, int]
    total: int
    fewest: int
    most: int
    balance: float


def _natural_key(name: str) -> tuple[object, ...]:
    # Class names "2" before "10"; words alphabetically.
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def class_balance_table(runs: Runs) -> list[ClassBalanceRow]:
    """One row per variant whose runs have a ``labeled.csv`` beside their ``history.csv``; empty if none has."""
    per_variant: dict[str, tuple[int, Counter[str]]] = {}
    for variant, seeds in runs.items():
        paths = [h.source.parent / LABELED_FILENAME for h in seeds.values() if h.source is not None]
        paths = [path for path in paths if path.is_file()]
        if paths:
            total: Counter[str] = Counter()
            for path in paths:
                counts = acquired_counts(path)
                total.update(counts)
                for name in counts:  # keep zero counts (findings never positive) as classes
                    total.setdefault(name, 0)
            per_variant[variant] = (len(paths), total)
    classes = sorted({name for _, counts in per_variant.values() for name in counts}, key=_natural_key)
    rows = []
    for variant, (seeds, counts) in per_variant.items():
        values = [counts.get(name, 0) for name in classes]
        total = sum(values)
        shares = [value / total for value in values if value > 0] if total else []
        entropy = -sum(share * math.log(share) for share in shares)
        balance = entropy / math.log(len(classes)) if len(classes) > 1 and total else math.nan
        rows.append(
            ClassBalanceRow(
                variant=variant,
                seeds=seeds,
                counts=dict(zip(classes, values, strict=True)),
                total=total,
                fewest=min(values, default=0),
                most=max(values, default=0),
                balance=balance,
            )
        )
    return rows


def class_balance_markdown(rows: list[ClassBalanceRow]) -> str:
    """The table as markdown: per variant, the acquired images of each class (summed over the seeds), the fewest and
    most of any class, and the balance (1: every class equally often)."""
    if not rows:
        return ""
    classes = list(rows[0].counts)
    lines = [
        "Images acquired per class (rounds 1 and later, summed over the seeds; multi-label: positives per finding). "
        "Balance: the normalised entropy of the class shares (1: every class asked for equally often).",
        "",
        f"| variant | seeds | {' | '.join(classes)} | fewest / most | balance |",
        f"|---|---:|{'---:|' * len(classes)}---:|---:|",
    ]
    for row in rows:
        cells = " | ".join(str(row.counts[name]) for name in classes)
        lines.append(f"| {row.variant} | {row.seeds} | {cells} | {row.fewest} / {row.most} | {row.balance:.3f} |")
    return "\n".join(lines) + "\n"


def write_class_balance_csv(rows: list[ClassBalanceRow], path: Path) -> Path:
    """One row per variant: ``variant``, ``seeds``, one column per class, ``total``, ``fewest``, ``most``,
    ``balance``."""
    classes = list(rows[0].counts) if rows else []
    columns = ["variant", "seeds", *classes, "total", "fewest", "most", "balance"]
    records = [
        [r.variant, r.seeds, *(r.counts[name] for name in classes), r.total, r.fewest, r.most, r.balance] for r in rows
    ]
    return write_csv(path, columns, records)
