"""Prints the tables of docs/results.md's class-balance section from two experiment reports.

Run after ``experiment.py report`` of both experiments (each with ``--metric val_balanced_accuracy``)::

    python docs/scripts/class_balance_tables.py lightning_logs/digits_long_tail/report \\
        lightning_logs/digits_balanced_pool/report --figure docs/digits_class_balance_gain.png

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

from alvae_pl.analysis.curves import new_figure, save_png
from alvae_pl.analysis.statistics import confidence_band

RARE = [str(digit) for digit in range(5, 10)]
ORDER = ["random", "entropy", "margin", "least_confidence", "bald", "badge", "coreset", "medal", "lossnet", "typiclust",
         "probcover"]  # fmt: skip


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_areas(report: Path) -> dict[str, dict[int, float]]:
    """variant -> seed -> area under the validation balanced-accuracy curve."""
    areas: dict[str, dict[int, float]] = defaultdict(dict)
    for row in read_rows(report / "area_val_balanced_accuracy.csv"):
        areas[row["variant"]][int(row["seed"])] = float(row["area"])
    return areas


def ordered(variants: list[str]) -> list[str]:
    return sorted(variants, key=lambda v: (ORDER.index(v) if v in ORDER else len(ORDER), v))


def paired_gain(areas: dict[str, dict[int, float]], heuristic: str) -> np.ndarray:
    """Per seed: the wrapped heuristic's area minus the heuristic's alone."""
    wrapped, alone = areas[f"{heuristic}_balanced"], areas[heuristic]
    return np.array([wrapped[seed] - alone[seed] for seed in sorted(set(wrapped) & set(alone))])


def table(report: Path) -> str:
    balance = {row["variant"]: row for row in read_rows(report / "class_balance.csv")}
    areas = read_areas(report)
    lines = [
        "| heuristic | digits 5-9 share | fewest / most | balance | area (mean +- sd) "
        "| wrapped minus alone, p (seeds better) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant in ordered([v for v in areas if not v.endswith("_balanced")]):
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
                versus = f"{(wrapped - alone).mean():+.3f}, {p:.3f} ({better}/{len(seeds)})"
            lines.append(
                f"| {label} | {rare:.2f} | {counts['fewest']} / {counts['most']} | {float(counts['balance']):.3f} | "
                f"{values.mean():.3f} +- {values.std(ddof=1):.3f} | {versus} |"
            )
    return "\n".join(lines)


def gain_figure(reports: dict[str, Path], path: Path) -> Path:
    """One row per heuristic: the wrapper's paired gain in area (mean and 95% t-interval over the seeds), one marker
    per pool."""
    per_pool = {name: read_areas(report) for name, report in reports.items()}
    heuristics = ordered([v for v in next(iter(per_pool.values())) if f"{v}_balanced" in next(iter(per_pool.values()))])
    figure = new_figure(6.5, 0.42 * len(heuristics) + 1.2)
    axes = figure.add_subplot(1, 1, 1)
    for offset, (name, areas) in zip((-0.15, 0.15), per_pool.items(), strict=False):
        rows = [h for h in heuristics if h in areas and f"{h}_balanced" in areas]
        bands = [confidence_band(paired_gain(areas, h)) for h in rows]
        y = [heuristics.index(h) + offset for h in rows]
        means = [band[0] for band in bands]
        errors = np.array([[band[0] - band[1] for band in bands], [band[2] - band[0] for band in bands]])
        axes.errorbar(means, y, xerr=errors, fmt="o", capsize=3, label=name)
    axes.axvline(0.0, color="grey", linewidth=0.8)
    axes.set_yticks(range(len(heuristics)), [h.replace("_", " ") for h in heuristics])
    axes.invert_yaxis()
    axes.set_xlabel("wrapped minus alone: area under the validation balanced-accuracy curve")
    axes.set_title("ClassBalanced's paired gain: mean and 95% CI over the seeds", fontsize=10)
    axes.legend(loc="best", fontsize=8)
    return save_png(figure, path)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    figure_path = None
    if "--figure" in arguments:
        position = arguments.index("--figure")
        figure_path = Path(arguments[position + 1])
        del arguments[position : position + 2]
    for folder in arguments:
        print(f"\n{folder}\n")
        print(table(Path(folder)))
    if figure_path is not None:
        names = {"digits_long_tail": "long-tailed pool", "digits_balanced_pool": "balanced pool"}
        reports = {names.get(Path(f).parent.name, Path(f).parent.name): Path(f) for f in arguments}
        print(f"\n{gain_figure(reports, figure_path)}")
