"""Prints the tables of docs/results.md's class-balance section from two experiment reports.

Run after ``experiment.py report`` of both experiments (each with ``--metric val_balanced_accuracy``)::

    python docs/scripts/class_balance_tables.py lightning_logs/digits_long_tail/report \\
        lightning_logs/digits_balanced_pool/report

For each variant: which digits its rounds asked for (``class_balance.csv``: the share of the digits 5-9, rare on
the long-tailed pool, the fewest and most of one digit, the balance) and the area under its balanced-accuracy curve
(``area_val_balanced_accuracy.csv``) with, for a wrapped variant, the paired difference to the same heuristic
unwrapped (t-test over the seeds, and how many seeds the wrapper did better on).
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import ttest_rel

RARE = [str(digit) for digit in range(5, 10)]
ORDER = ["random", "entropy", "margin", "least_confidence", "bald", "badge", "coreset", "medal", "lossnet", "typiclust",
         "probcover"]  # fmt: skip


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def table(report: Path) -> str:
    balance = {row["variant"]: row for row in read_rows(report / "class_balance.csv")}
    areas: dict[str, dict[int, float]] = defaultdict(dict)
    for row in read_rows(report / "area_val_balanced_accuracy.csv"):
        areas[row["variant"]][int(row["seed"])] = float(row["area"])
    lines = [
        "| heuristic | digits 5-9 share | fewest / most | balance | area (mean +- sd) "
        "| wrapped minus alone, p (seeds better) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    alone = [v for v in areas if not v.endswith("_balanced")]
    for variant in sorted(alone, key=lambda v: (ORDER.index(v) if v in ORDER else len(ORDER), v)):
        for name in (variant, f"{variant}_balanced"):
            if name not in areas or name not in balance:
                continue
            counts = balance[name]
            rare = sum(int(counts[d]) for d in RARE) / int(counts["total"])
            values = np.array([areas[name][seed] for seed in sorted(areas[name])])
            label = "+ `ClassBalanced`" if name.endswith("_balanced") else variant.replace("_", " ")
            versus = ""
            if name.endswith("_balanced") and variant in areas:
                seeds = sorted(set(areas[name]) & set(areas[variant]))
                wrapped = np.array([areas[name][s] for s in seeds])
                alone = np.array([areas[variant][s] for s in seeds])
                p = ttest_rel(wrapped, alone).pvalue
                better = int((wrapped > alone).sum())
                versus = f"{(wrapped - alone).mean():+.3f}, {p:.2f} ({better}/{len(seeds)})"
            lines.append(
                f"| {label} | {rare:.2f} | {counts['fewest']} / {counts['most']} | {float(counts['balance']):.3f} | "
                f"{values.mean():.3f} +- {values.std(ddof=1):.3f} | {versus} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(f"\n{folder}\n")
        print(table(Path(folder)))
