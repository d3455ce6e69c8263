"""Comparisons beyond one baseline: label efficiency, the pairwise penalty matrix and ranks with their
critical-difference diagram, written for one experiment (inside its report) or for several together.

For one metric, ``write_sections(settings, metric, folder, ...)`` writes::

    <folder>/efficiency_<metric>.md / .csv        labels to reach a fraction of the best final mean (one
                                                  experiment only; a combined report leaves it to each one's own)
    <folder>/penalty_<metric>.md / .csv / .png    the pairwise penalty matrix summed over the experiments
    <folder>/ranks_<metric>.md / .csv             average ranks, Friedman, Iman-Davenport and Nemenyi
    <folder>/critical_difference_<metric>.png     the critical-difference diagram

``write_combined_report(experiments, folder, metrics)`` writes those for every metric that all experiments hold,
and ``report.md``: several experiments (settings) reported together, over the variants they all ran.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alvae_pl.analysis.critical_difference import (
    Blocks,
    friedman_nemenyi,
    plot_critical_difference,
    rank_markdown,
    score_table,
    write_ranks_csv,
)
from alvae_pl.analysis.history import Runs
from alvae_pl.analysis.label_efficiency import (
    DEFAULT_FRACTION,
    efficiency_markdown,
    label_efficiency,
    write_efficiency_csv,
)
from alvae_pl.analysis.penalty_matrix import (
    common_heuristics,
    penalty_markdown,
    penalty_matrix,
    plot_penalty_matrix,
    write_penalty_csv,
)
from alvae_pl.atomic_files import atomic_write_text


@dataclass
class Sections:
    """The markdown :func:`write_sections` wrote for one metric (None: not written, ``notes`` says why)."""

    efficiency: str | None = None
    penalty: str | None = None
    ranks: str | None = None
    figure: Path | None = None
    penalty_figure: Path | None = None
    notes: list[str] = field(default_factory=list)

    def page_lines(self) -> list[str]:
        """The sections as lines of a report page, the diagram as an image beside its numbers."""
        lines = [text for text in (self.efficiency, self.penalty) if text is not None]
        if self.penalty_figure is not None:
            lines += [f"![penalty matrix]({self.penalty_figure.name})", ""]
        if self.ranks is not None:
            lines.append(self.ranks)
        if self.figure is not None:
            lines += [f"![critical-difference diagram]({self.figure.name})", ""]
        lines += [f"Not written: {note}." for note in self.notes]
        return lines + ([""] if self.notes else [])


def write_sections(
    settings: Mapping[str, Runs],
    metric: str,
    folder: str | Path,
    alpha: float = 0.05,
    fraction: float = DEFAULT_FRACTION,
    blocks: Blocks = "seed",
    baseline: str | None = None,
) -> Sections:
    """Write the files of the module docstring for ``metric`` into ``folder`` (which must exist).

    Args:
        settings: ``{experiment name: runs}``; one entry for one experiment's report.
        alpha: level of the t-tests of the penalty matrix and of the Friedman and Nemenyi tests.
        fraction: label efficiency's share of the best final mean.
        blocks: the rank tests' blocks, ``"seed"`` or ``"round"``.
        baseline: the variant label efficiency's ratios divide by (one experiment only).

    A section that cannot be computed (too few seeds or variants) is listed in ``Sections.notes`` instead; the
    others are still written.
    """
    folder = Path(folder)
    sections = Sections()
    if len(settings) == 1:
        runs = next(iter(settings.values()))
        efficiency = label_efficiency(runs, metric, fraction, baseline)
        sections.efficiency = efficiency_markdown(efficiency)
        atomic_write_text(folder / f"efficiency_{metric}.md", sections.efficiency)
        write_efficiency_csv(efficiency, folder / f"efficiency_{metric}.csv")
    penalty = penalty_matrix(settings, metric, alpha)
    sections.penalty = penalty_markdown(penalty)
    atomic_write_text(folder / f"penalty_{metric}.md", sections.penalty)
    write_penalty_csv(penalty, folder / f"penalty_{metric}.csv")
    sections.penalty_figure = folder / f"penalty_{metric}.png"
    plot_penalty_matrix(penalty, sections.penalty_figure)
    try:
        ranks = friedman_nemenyi(score_table(settings, metric, blocks), alpha)
    except ValueError as error:  # fewer than two complete blocks
        sections.notes.append(f"ranks of {metric}: {error}")
        return sections
    sections.ranks = rank_markdown(ranks)
    atomic_write_text(folder / f"ranks_{metric}.md", sections.ranks)
    write_ranks_csv(ranks, folder / f"ranks_{metric}.csv")
    sections.figure = folder / f"critical_difference_{metric}.png"
    plot_critical_difference(ranks, sections.figure)
    return sections


@dataclass
class CombinedReport:
    """What :func:`write_combined_report` wrote: the folder, the variants compared, the sections per metric."""

    folder: Path
    heuristics: tuple[str, ...]
    left_out: dict[str, list[str]]
    sections: dict[str, Sections] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _has_values(runs: Runs, metric: str) -> bool:
    histories = [history for seeds in runs.values() for history in seeds.values()]
    return all(metric in h.columns for h in histories) and any(
        math.isfinite(float(v)) for h in histories for v in h.column(metric)
    )


def write_combined_report(
    experiments: Mapping[str, Runs],
    folder: str | Path,
    metrics: Sequence[str],
    alpha: float = 0.05,
    blocks: Blocks = "seed",
    title: str | None = None,
) -> CombinedReport:
    """Penalty matrix and ranks over several experiments, for the variants all of them ran.

    Args:
        experiments: ``{experiment name: runs}``, at least two.
        folder: the report folder, created if needed.
        metrics: history columns; those without values in every experiment are skipped.

    Raises:
        ValueError: fewer than two experiments, fewer than two shared variants, or no metric with values.
    """
    if len(experiments) < 2:
        raise ValueError(f"a combined report needs at least two experiments, got {list(experiments)}")
    heuristics = common_heuristics(experiments)
    left_out = {name: [v for v in runs if v not in heuristics] for name, runs in experiments.items()}
    settings = {name: {v: runs[v] for v in heuristics} for name, runs in experiments.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = CombinedReport(folder, heuristics, {k: v for k, v in left_out.items() if v})
    for metric in metrics:
        if not all(_has_values(runs, metric) for runs in settings.values()):
            report.skipped[metric] = "no values in some experiment's histories"
            continue
        report.sections[metric] = write_sections(settings, metric, folder, alpha, blocks=blocks)
    if not report.sections:
        raise ValueError(f"none of the metrics {list(metrics)} has values in every experiment; check the runs")
    lines = [
        f"# {title or 'Experiments compared: ' + ', '.join(experiments)}",
        "",
        "Experiments (settings): "
        + ", ".join(f"{name} ({len(next(iter(runs.values())))} seeds)" for name, runs in settings.items())
        + f"; variants run in all of them: {', '.join(heuristics)}.",
        "",
    ]
    if report.left_out:
        lines += [f"Left out (not run in every experiment): {report.left_out}.", ""]
    for metric, sections in report.sections.items():
        lines += [f"## {metric}", "", *sections.page_lines()]
    atomic_write_text(folder / "report.md", "\n".join(lines))
    return report
