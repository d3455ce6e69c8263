"""Ranks over settings: the Friedman test, the Nemenyi post-hoc test and the critical-difference diagram
(Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 7, 2006).

A *block* is one row of scores, one per heuristic; heuristics are ranked within each block (1 = best, ties get
the mean rank) and the ranks averaged over the N blocks. Two kinds of blocks (``blocks=``):

- ``"seed"`` (default): one block per (experiment, seed), scored by the normalised area under the seed's curve
  (the mean of the metric over the label counts all runs of that experiment reached). Seeds are independent
  replicates and every heuristic of one seed starts from the same labels, which is the blocking the Friedman
  test assumes (independent blocks, a paired comparison inside each).
- ``"round"``: one block per (experiment, label count), scored by the mean over the seeds all heuristics share.
  Closer to "one per data set and budget", but the rounds of one run are not independent (each grows the last
  one's labeled set), so its p-values are optimistic; use it to see *where* on the curve the ranks differ.

With k heuristics and N blocks, the Friedman statistic is ``12 N / (k (k + 1)) * (sum_j R_j^2 - k (k + 1)^2 / 4)``
divided by the tie correction ``1 - sum(t^3 - t) / (N k (k^2 - 1))`` (as ``scipy.stats.friedmanchisquare``),
chi-square with k - 1 degrees of freedom; Iman and Davenport's ``F = (N - 1) chi2 / (N (k - 1) - chi2)`` is its
less conservative F form (k - 1 and (k - 1)(N - 1) degrees of freedom). The Nemenyi test calls two heuristics
different when their average ranks differ by at least ``CD = q_alpha sqrt(k (k + 1) / (6 N))``, with ``q_alpha``
the studentized range quantile (infinite degrees of freedom) over sqrt(2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from alvae_pl.analysis.curves import save_png
from alvae_pl.analysis.history import Runs, check_metric
from alvae_pl.analysis.penalty_matrix import common_heuristics
from alvae_pl.atomic_files import write_csv

Blocks = Literal["seed", "round"]


@dataclass(frozen=True)
class ScoreTable:
    """Scores to rank: ``scores[b, j]`` of heuristic j in block b (higher is better), float64 ``[N, k]``."""

    metric: str
    heuristics: tuple[str, ...]
    blocks: tuple[str, ...]
    scores: np.ndarray
    kind: Blocks


def score_table(
    settings: Mapping[str, Runs], metric: str, blocks: Blocks = "seed", heuristics: Sequence[str] | None = None
) -> ScoreTable:
    """Build the blocks of the module docstring from ``{experiment: runs}``.

    Only variants every experiment ran are ranked (``heuristics`` picks and orders them). A seed enters as a
    block when every heuristic ran it to every shared label count with finite values; a label count enters when
    every heuristic has finite values there for all the seeds they share.
    """
    if blocks not in ("seed", "round"):
        raise ValueError(f"blocks must be 'seed' or 'round', got {blocks!r}")
    names = common_heuristics(settings, heuristics)
    rows: list[list[float]] = []
    block_names: list[str] = []
    for setting, runs in settings.items():
        runs = {name: runs[name] for name in names}
        check_metric(runs, metric)
        curves = {name: {seed: h.values_by_labels(metric) for seed, h in seeds.items()} for name, seeds in runs.items()}
        seeds = sorted(set.intersection(*(set(by_seed) for by_seed in curves.values())))
        shared = set.intersection(*(set(curve) for by_seed in curves.values() for curve in by_seed.values()))
        counts = sorted(shared)
        if blocks == "seed":
            for seed in seeds:
                row = [[curves[name][seed][n] for n in counts] for name in names]
                if counts and all(math.isfinite(v) for values in row for v in values):
                    rows.append([float(np.mean(values)) for values in row])
                    block_names.append(f"{setting}/seed_{seed}")
        else:
            for n in counts:
                row = [[curves[name][seed][n] for seed in seeds] for name in names]
                if seeds and all(math.isfinite(v) for values in row for v in values):
                    rows.append([float(np.mean(values)) for values in row])
                    block_names.append(f"{setting}/{n} labels")
    if len(rows) < 2:
        raise ValueError(
            f"only {len(rows)} complete block(s) of {metric!r} ({blocks} blocks); ranking needs at least two: "
            "run more seeds or give more experiments"
        )
    return ScoreTable(metric, names, tuple(block_names), np.asarray(rows, dtype=np.float64), blocks)


def nemenyi_critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Demšar's critical difference of average ranks for k heuristics over n blocks at level alpha."""
    if k < 2 or n < 1:
        raise ValueError(f"a critical difference needs k >= 2 heuristics and n >= 1 blocks, got k={k}, n={n}")
    q_alpha = float(stats.studentized_range.ppf(1.0 - alpha, k, np.inf)) / math.sqrt(2.0)
    return q_alpha * math.sqrt(k * (k + 1) / (6.0 * n))


@dataclass(frozen=True)
class RankTest:
    """The Friedman and Nemenyi tests on a :class:`ScoreTable`.

    Attributes:
        table: the scores ranked.
        ranks: float64 ``[N, k]``, 1 = best in its block, ties the mean of their ranks.
        average_ranks: ``[k]``, the mean of ``ranks`` over blocks.
        chi2, pvalue: the Friedman statistic (tie-corrected) and its chi-square p-value.
        iman_davenport, iman_davenport_pvalue: the F statistic and its p-value (inf and 0 when every block ranks
            the heuristics the same way).
        critical_difference: Nemenyi's CD at ``alpha``.
        groups: maximal sets of heuristics (by index, in rank order) whose average ranks all lie within less than
            CD of each other: not significantly different; the bars of the diagram.
    """

    table: ScoreTable
    ranks: np.ndarray
    average_ranks: np.ndarray
    chi2: float
    pvalue: float
    iman_davenport: float
    iman_davenport_pvalue: float
    critical_difference: float
    alpha: float
    groups: tuple[tuple[int, ...], ...]

    @property
    def order(self) -> list[int]:
        """Heuristic indices from the best average rank to the worst (stable for ties)."""
        return sorted(range(len(self.average_ranks)), key=lambda j: self.average_ranks[j])


def friedman_nemenyi(table: ScoreTable, alpha: float = 0.05) -> RankTest:
    """Rank ``table``'s scores within blocks and run the tests of the module docstring."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    n, k = table.scores.shape
    if k < 2:
        raise ValueError(f"ranking needs at least two heuristics, got {list(table.heuristics)}")
    ranks = np.apply_along_axis(stats.rankdata, 1, -table.scores)  # higher score -> rank 1
    average = ranks.mean(axis=0)
    # Ties: sum over blocks and tied groups of t^3 - t (t = the group's size), as scipy's correction.
    ties = sum(float(np.sum(counts**3 - counts)) for counts in (np.unique(row, return_counts=True)[1] for row in ranks))
    correction = 1.0 - ties / (n * k * (k * k - 1))
    if correction <= 0:  # every block ties every heuristic: nothing to rank
        chi2, pvalue, f_value, f_pvalue = 0.0, 1.0, 0.0, 1.0
    else:
        chi2 = 12.0 * n / (k * (k + 1)) * (float(np.sum(average**2)) - k * (k + 1) ** 2 / 4.0) / correction
        pvalue = float(stats.chi2.sf(chi2, k - 1))
        denominator = n * (k - 1) - chi2
        if denominator <= 1e-12 * n * k:  # perfect agreement across blocks
            f_value, f_pvalue = math.inf, 0.0
        else:
            f_value = (n - 1) * chi2 / denominator
            f_pvalue = float(stats.f.sf(f_value, k - 1, (k - 1) * (n - 1))) if n > 1 else math.nan
    cd = nemenyi_critical_difference(k, n, alpha)
    return RankTest(table, ranks, average, chi2, pvalue, f_value, f_pvalue, cd, alpha, _groups(average, cd))


def _groups(average_ranks: np.ndarray, cd: float) -> tuple[tuple[int, ...], ...]:
    """Maximal runs of heuristics, in rank order, whose extreme average ranks differ by less than ``cd``."""
    order = sorted(range(len(average_ranks)), key=lambda j: average_ranks[j])
    runs: list[tuple[int, ...]] = []
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and average_ranks[order[end + 1]] - average_ranks[order[start]] < cd:
            end += 1
        if end > start and not (runs and order.index(runs[-1][-1]) >= end):
            runs.append(tuple(order[start : end + 1]))
    return tuple(runs)


def rank_markdown(result: RankTest) -> str:
    """Average ranks and the tests' numbers as markdown."""
    table = result.table
    names = table.heuristics
    blocks = {"seed": "(experiment, seed): the area under each seed's curve", "round": "(experiment, label count)"}
    lines = [
        f"**Average ranks** ({table.metric}; 1 = best) over {len(table.blocks)} blocks, one per "
        f"{blocks[table.kind]}. Friedman chi² = {result.chi2:.3f} (df {len(names) - 1}), p = {_p(result.pvalue)}; "
        f"Iman-Davenport F = {result.iman_davenport:.3f}, p = {_p(result.iman_davenport_pvalue)}. Nemenyi critical "
        f"difference at {result.alpha:g}: CD = {result.critical_difference:.3f}.",
        "",
        "| rank | heuristic | average rank | not different from (Nemenyi) |",
        "|---:|---|---:|---|",
    ]
    for place, j in enumerate(result.order, start=1):
        peers = sorted(
            {names[i] for group in result.groups if j in group for i in group if i != j},
            key=lambda name: result.average_ranks[names.index(name)],
        )
        peers_text = "all the others" if len(peers) == len(names) - 1 and len(names) > 2 else ", ".join(peers) or "—"
        lines.append(f"| {place} | {names[j]} | {result.average_ranks[j]:.2f} | {peers_text} |")
    if result.pvalue >= result.alpha:
        lines += [
            "",
            f"The Friedman test does not reject equal ranks at {result.alpha:g}: read the post-hoc test "
            "as descriptive only.",
        ]
    return "\n".join(lines) + "\n"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else (f"{value:.2e}" if value < 1e-3 else f"{value:.3f}")


def write_ranks_csv(result: RankTest, path: str | Path) -> Path:
    """One row per block: its name, then each heuristic's score and rank."""
    names = result.table.heuristics
    header = ["block", *(f"{name}_score" for name in names), *(f"{name}_rank" for name in names)]
    rows = [
        [block, *result.table.scores[b].tolist(), *result.ranks[b].tolist()]
        for b, block in enumerate(result.table.blocks)
    ]
    rows.append(["average_rank", *([""] * len(names)), *result.average_ranks.tolist()])
    return write_csv(path, header, rows)


def plot_critical_difference(result: RankTest, path: str | Path | None = None, title: str | None = None) -> Figure:
    """Demšar's diagram: an axis of average ranks (1 at the left), the better half of the heuristics named on
    the left, the worse half on the right, each joined to its rank by an elbow line, the CD drawn above the axis
    and a thick bar joining each group that the Nemenyi test does not separate."""
    names = result.table.heuristics
    k = len(names)
    order = result.order
    left = order[: (k + 1) // 2]
    right = order[(k + 1) // 2 :][::-1]  # the worst at the top, so that no two lines cross
    rows = max(len(left), len(right))
    bar_rows = len(result.groups)
    # Vertical layout in line units, growing downwards: title, CD, axis, group bars, one line per name.
    axis_y = 2.3
    bars_y = axis_y + 0.5
    names_y = bars_y + 0.35 * bar_rows + 0.5
    height_units = names_y + rows + 0.3
    # Widths in inches: the names' margins fit the longest label (about 0.075 in a character at 9 pt).
    labels = {j: f"{names[j]} ({float(result.average_ranks[j]):.2f})" for j in range(k)}
    margin = 0.075 * max(len(label) for label in labels.values()) + 0.35
    axis_width = max(3.0, 0.45 * k)
    width = axis_width + 2 * margin
    figure = Figure(figsize=(width, 0.3 * height_units + 0.2))  # no layout engine: the axes fill the figure
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_axis_off()
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(height_units, 0.0)
    low, high = margin / width, 1.0 - margin / width  # the axis spans the middle; names take the margins

    def x(rank: float) -> float:
        return low + (rank - 1.0) / max(k - 1, 1) * (high - low)

    axes.plot([x(1), x(k)], [axis_y, axis_y], color="black", linewidth=1)
    for rank in range(1, k + 1):
        axes.plot([x(rank)] * 2, [axis_y - 0.15, axis_y], color="black", linewidth=1)
        axes.text(x(rank), axis_y - 0.2, str(rank), ha="center", va="bottom", fontsize=9)
    cd = result.critical_difference
    cd_end = min(1.0 + cd, float(k))  # a CD wider than the axis is drawn to its end and labelled with its value
    axes.plot([x(1), x(cd_end)], [axis_y - 0.9] * 2, color="black", linewidth=1.5)
    for end in (1.0, cd_end):
        axes.plot([x(end)] * 2, [axis_y - 1.0, axis_y - 0.8], color="black", linewidth=1)
    axes.text((x(1) + x(cd_end)) / 2, axis_y - 1.05, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for side, members in (("left", left), ("right", right)):
        for row, j in enumerate(members):
            y = names_y + row
            rank = float(result.average_ranks[j])
            edge = low - 0.15 / width if side == "left" else high + 0.15 / width  # 0.15 in of line past the axis
            axes.plot([x(rank), x(rank), edge], [axis_y, y, y], color="black", linewidth=0.8)
            label = labels[j] if side == "left" else f"({rank:.2f}) {names[j]}"
            axes.text(
                edge + (-0.05 if side == "left" else 0.05) / width,
                y,
                label,
                ha="right" if side == "left" else "left",
                va="center",
                fontsize=9,
            )
    for row, group in enumerate(result.groups):
        ranks = [float(result.average_ranks[j]) for j in group]
        y = bars_y + 0.35 * row
        axes.plot(
            [x(min(ranks)) - 0.008, x(max(ranks)) + 0.008], [y, y], color="black", linewidth=3, solid_capstyle="butt"
        )
    heading = title or (
        f"{result.table.metric}: average ranks over {len(result.table.blocks)} {result.table.kind} blocks, "
        f"Friedman p = {_p(result.pvalue)}"
    )
    axes.text(0.5, 0.15, heading, ha="center", va="top", fontsize=10)
    if path is not None:
        save_png(figure, path)
    return figure
