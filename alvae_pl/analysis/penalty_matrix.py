"""The pairwise penalty matrix of Ash et al. (2020, BADGE, section 5 and appendix): how often each heuristic
beats each other one, summed over settings.

For every setting (an experiment: data, budget, recipe), every pair of heuristics (i, j) and every label count
at which both have a finite value for every seed they share, a two-sided paired t-test (``scipy.stats.ttest_rel``
over the seeds) compares them. When it finds a difference at level ``alpha``, the better one gets ``1 / L`` in
its row against the worse one's column, with ``L`` the number of label counts compared for that pair in that
setting. So ``P[i, j]`` lies between 0 and the number of settings: "in how many settings' worth of rounds did i
beat j". Column summaries say how often a heuristic was beaten: BADGE reports the column mean, lower is better.

Seeds are paired (seed k of every variant starts from the same initial labels), which is what makes the paired
test valid. Rounds where two variants share everything (the first round, before any selection) tie exactly and
count in ``L`` like any other round, so a setting's largest possible entry is then ``(L - 1) / L``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from alvae_pl.analysis.curves import new_figure, save_png
from alvae_pl.analysis.history import Runs, check_metric
from alvae_pl.analysis.statistics import paired_pvalues
from alvae_pl.atomic_files import write_csv

Settings = Mapping[str, Runs]
"""``{setting name: Runs}``: one entry per experiment compared together."""


@dataclass(frozen=True)
class PenaltyMatrix:
    """What :func:`penalty_matrix` found.

    Attributes:
        metric: the history column compared (higher is better).
        heuristics: the compared variants, ``k`` of them, in row/column order.
        matrix: float64 ``[k, k]``; ``matrix[i, j]`` is the share of rounds, summed over settings, in which
            heuristic i was significantly better than heuristic j. The diagonal is 0.
        settings: the setting names, in the order summed.
        rounds: ``{setting: {(i_name, j_name): L}}``, the label counts compared per pair (0: no shared seeds).
        alpha: the t-test's significance level.
    """

    metric: str
    heuristics: tuple[str, ...]
    matrix: np.ndarray
    settings: tuple[str, ...]
    rounds: dict[str, dict[tuple[str, str], int]]
    alpha: float

    @property
    def column_mean(self) -> np.ndarray:
        """``[k]``: the mean penalty a heuristic took from each of the k - 1 others (BADGE's summary; lower is
        better). The diagonal is left out, so that the number does not depend on counting a heuristic against
        itself."""
        k = len(self.heuristics)
        return self.matrix.sum(axis=0) / max(k - 1, 1)

    @property
    def column_max(self) -> np.ndarray:
        """``[k]``: the largest penalty one single rival gave each heuristic."""
        return self.matrix.max(axis=0)

    @property
    def row_sum(self) -> np.ndarray:
        """``[k]``: how much each heuristic beat all the others together (higher is better)."""
        return self.matrix.sum(axis=1)


def common_heuristics(settings: Settings, heuristics: Sequence[str] | None = None) -> tuple[str, ...]:
    """The variants every setting ran, in the first setting's order (or ``heuristics``' order if given)."""
    if not settings:
        raise ValueError("no settings given; pass {experiment name: runs} for at least one experiment")
    shared = set.intersection(*(set(runs) for runs in settings.values()))
    if heuristics is not None:
        missing = {name: [s for s, runs in settings.items() if name not in runs] for name in heuristics}
        missing = {name: where for name, where in missing.items() if where}
        if missing:
            raise ValueError(f"heuristic(s) without runs in some settings: {missing}; drop them or run them")
        return tuple(heuristics)
    first = next(iter(settings.values()))
    names = tuple(name for name in first if name in shared)
    if len(names) < 2:
        raise ValueError(
            f"the settings {list(settings)} share fewer than two variants ({list(names)}); give the same variant "
            "names in every experiment compared together"
        )
    return names


def _paired_curves(
    runs: Runs, first: str, second: str, metric: str
) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    """``(seeds, label counts, values of first [S, L], values of second [S, L])`` over the seeds both ran, at the
    label counts where every one of those seeds has a finite value for both."""
    seeds = sorted(set(runs[first]) & set(runs[second]))
    if not seeds:
        return [], [], np.zeros((0, 0)), np.zeros((0, 0))
    curves = [runs[name][seed].values_by_labels(metric) for name in (first, second) for seed in seeds]
    shared = set.intersection(*(set(curve) for curve in curves))
    counts = sorted(n for n in shared if all(math.isfinite(curve[n]) for curve in curves))
    values = np.asarray([[curve[n] for n in counts] for curve in curves], dtype=np.float64).reshape(
        2, len(seeds), len(counts)
    )
    return seeds, counts, values[0], values[1]


def penalty_matrix(
    settings: Settings, metric: str, alpha: float = 0.05, heuristics: Sequence[str] | None = None
) -> PenaltyMatrix:
    """The pairwise penalty matrix over ``settings`` (module docstring).

    Args:
        settings: ``{setting name: {variant: {seed: History}}}``; one setting for a single experiment.
        metric: a history column where higher is better, e.g. ``"val_accuracy"``.
        alpha: level of the two-sided paired t-test.
        heuristics: variants to compare, in this order; default those every setting ran.

    Returns:
        The matrix and what it was computed from. A pair with fewer than two shared seeds in a setting is not
        tested there (a t-test needs two pairs) and adds nothing.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    names = common_heuristics(settings, heuristics)
    matrix = np.zeros((len(names), len(names)), dtype=np.float64)
    rounds: dict[str, dict[tuple[str, str], int]] = {}
    for setting, runs in settings.items():
        check_metric({name: runs[name] for name in names}, metric)
        rounds[setting] = {}
        for i, first in enumerate(names):
            for j in range(i + 1, len(names)):
                second = names[j]
                seeds, counts, a, b = _paired_curves(runs, first, second, metric)
                tested = len(counts) if len(seeds) >= 2 else 0
                rounds[setting][(first, second)] = tested
                for column in range(tested):
                    t_pvalue, _ = paired_pvalues(b[:, column], a[:, column])
                    if not t_pvalue < alpha:  # NaN (no variance of the differences) decides nothing
                        continue
                    winner, loser = (i, j) if np.mean(a[:, column] - b[:, column]) > 0 else (j, i)
                    matrix[winner, loser] += 1.0 / tested
    return PenaltyMatrix(metric, names, matrix, tuple(settings), rounds, alpha)


def penalty_markdown(result: PenaltyMatrix) -> str:
    """The matrix as a markdown table, rows beating columns, with the column mean and maximum below it."""
    names = result.heuristics
    lines = [
        f"**Pairwise penalty matrix** ({result.metric}; Ash et al. 2020): cell (row, column) is the share of label "
        f"counts at which the row heuristic beat the column heuristic (two-sided paired t-test over seeds, "
        f"p < {result.alpha:g}), summed over {len(result.settings)} setting(s): {', '.join(result.settings)}. "
        f"At most {len(result.settings)}. Column mean (over the other heuristics): how often a heuristic lost; "
        "lower is better.",
        "",
        "| beats → | " + " | ".join(names) + " | row sum |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for i, name in enumerate(names):
        cells = ["—" if i == j else f"{result.matrix[i, j]:.2f}" for j in range(len(names))]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {result.row_sum[i]:.2f} |")
    lines.append("| **column mean** | " + " | ".join(f"**{v:.2f}**" for v in result.column_mean) + " | |")
    lines.append("| column max | " + " | ".join(f"{v:.2f}" for v in result.column_max) + " | |")
    untested = sorted(
        {f"{a}/{b}" for per_pair in result.rounds.values() for (a, b), count in per_pair.items() if count == 0}
    )
    if untested:
        lines += ["", f"Not tested (fewer than two shared seeds or no shared label count): {', '.join(untested)}."]
    return "\n".join(lines) + "\n"


def write_penalty_csv(result: PenaltyMatrix, path: str | Path) -> Path:
    """One row per heuristic (``beats`` then one column per heuristic), then the column mean and max rows."""
    header = ["beats", *result.heuristics]
    rows: list[list[object]] = [[name, *result.matrix[i].tolist()] for i, name in enumerate(result.heuristics)]
    rows.append(["column_mean", *result.column_mean.tolist()])
    rows.append(["column_max", *result.column_max.tolist()])
    return write_csv(path, header, rows)


def plot_penalty_matrix(result: PenaltyMatrix, path: str | Path | None = None) -> Figure:
    """The matrix as a heat map in BADGE's layout: rows beat columns, the value in each cell, the column mean in a
    row of its own below (the darker, the more often beaten)."""
    names = result.heuristics
    k = len(names)
    table = np.vstack([result.matrix, result.column_mean[None, :]])  # [k + 1, k]
    figure = new_figure(1.2 + 0.55 * k + 1.0, 1.0 + 0.45 * (k + 1) + 1.2)
    axes = figure.add_subplot()
    image = axes.imshow(table, cmap="Greys", vmin=0.0, vmax=max(float(table.max()), 1e-9), aspect="auto")
    for row in range(k + 1):
        for column in range(k):
            if row == column:
                continue
            value = table[row, column]
            colour = "white" if value > 0.6 * table.max() else "black"
            axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    axes.axhline(k - 0.5, color="black", linewidth=1.5)
    axes.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(k + 1), [*names, "column mean"], fontsize=8)
    axes.set_xlabel("beaten (column)")
    axes.set_ylabel("beats (row)")
    axes.set_title(f"Penalty matrix, {result.metric}, {len(result.settings)} setting(s)", fontsize=10)
    figure.colorbar(image, ax=axes, shrink=0.8)
    if path is not None:
        save_png(figure, path)
    return figure
