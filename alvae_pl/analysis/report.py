"""The report of an experiment: learning curves, paired comparison tables and TensorBoard images in one folder.

``write_report(runs, folder, baseline)`` writes, for every metric the histories hold values of::

    <folder>/curves_<metric>.png        mean and 95% band per variant against the number of labels
    <folder>/comparison_<metric>.md     mean ± sd, paired t-test and Wilcoxon p per label count (p < 0.05 bold)
    <folder>/comparison_<metric>.csv    the same rows, every field
    <folder>/area_<metric>.md           the normalised area under each curve (mean over label counts), per
                                        variant and seed, with the paired tests against the baseline
    <folder>/area_<metric>.csv          one row per variant and seed
    <folder>/efficiency_<metric>.md     labels each variant needs to reach a fraction of the best final mean
    <folder>/penalty_<metric>.md        the pairwise penalty matrix (Ash et al. 2020) over the variants (and .png)
    <folder>/ranks_<metric>.md          average ranks over seeds, Friedman and Nemenyi tests (Demšar 2006)
    <folder>/critical_difference_<metric>.png   their critical-difference diagram
                                        (each .md with a .csv beside it; see ``comparisons``)
    <folder>/stopping.md                where each stopping rule would have ended each run (labels saved, metric
                                        lost; :mod:`alvae_pl.analysis.stopping`), and ``stopping.csv``
    <folder>/class_balance.md           which classes each variant's rounds asked for, from the runs' labeled.csv
                                        (:mod:`alvae_pl.analysis.acquired_classes`), and ``class_balance.csv``
    <folder>/report.md                  all tables and figures in one page
    <folder>/events.out.tfevents.*      the figures and tables for TensorBoard (``tensorboard --logdir <folder>``)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alvae_pl.analysis.acquired_classes import class_balance_markdown, class_balance_table, write_class_balance_csv
from alvae_pl.analysis.comparisons import Sections, write_sections
from alvae_pl.analysis.critical_difference import Blocks
from alvae_pl.analysis.curves import figure_to_tensorboard, plot_curves
from alvae_pl.analysis.history import Runs
from alvae_pl.analysis.label_efficiency import DEFAULT_FRACTION
from alvae_pl.analysis.statistics import (
    area_markdown,
    compare_areas,
    compare_variants,
    to_markdown,
    write_area_csv,
    write_table_csv,
)
from alvae_pl.analysis.stopping import report_rules, stopping_markdown, stopping_table, write_stopping_csv
from alvae_pl.atomic_files import atomic_write_text

#: The metrics a report covers, when the histories hold them.
REPORT_METRICS: tuple[str, ...] = ("val_accuracy", "test_accuracy", "val_auroc", "test_auroc")


@dataclass
class Report:
    """What :func:`write_report` wrote.

    Attributes:
        folder: the report folder.
        figures: metric -> ``curves_<metric>.png``.
        tables: metric -> ``comparison_<metric>.md`` (and a ``.csv`` beside it).
        markdown: metric -> the markdown table.
        area_markdown: metric -> the markdown table of areas under the curves.
        skipped: metric -> why it has no figure or table.
        sections: metric -> label efficiency, penalty matrix and ranks (:mod:`~alvae_pl.analysis.comparisons`).
        stopping_markdown: the stopping rules' table (empty before :func:`write_report` fills it).
        class_balance_markdown: the classes each variant acquired (empty when no run has a ``labeled.csv``).
    """

    folder: Path
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)
    markdown: dict[str, str] = field(default_factory=dict)
    area_markdown: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    sections: dict[str, Sections] = field(default_factory=dict)
    stopping_markdown: str = ""
    class_balance_markdown: str = ""


def filter_runs(runs: Runs, variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> Runs:
    """Keep the given variants (in that order) and seeds; variants left without a run are dropped."""
    kept: Runs = {}
    for variant in variants if variants is not None else list(runs):
        selected = {s: h for s, h in runs.get(variant, {}).items() if seeds is None or s in seeds}
        if selected:
            kept[variant] = selected
    return kept


def _has_values(runs: Runs, metric: str) -> bool:
    """Whether every history has column ``metric`` and at least one of them a finite value in it."""
    histories = [history for seeds in runs.values() for history in seeds.values()]
    if not all(metric in history.columns for history in histories):
        return False
    return any(math.isfinite(float(value)) for history in histories for value in history.column(metric))


def unfinished_runs(runs: Runs) -> list[str]:
    """``variant/seed_<k>`` of each history whose last round still acquired labels (a run still going)."""
    unfinished = []
    for variant, seeds in runs.items():
        for seed, history in seeds.items():
            if "acquisition_seconds" in history.columns and math.isfinite(
                float(history.column("acquisition_seconds")[-1])
            ):
                unfinished.append(f"{variant}/seed_{seed}")
    return unfinished


def write_report(
    runs: Runs,
    folder: str | Path,
    baseline: str,
    metrics: Sequence[str] = REPORT_METRICS,
    alpha: float = 0.05,
    title: str | None = None,
    tensorboard: bool = True,
    fraction: float = DEFAULT_FRACTION,
    blocks: Blocks = "seed",
    main_metric: str | None = None,
) -> Report:
    """Write curves, comparison tables and TensorBoard images of ``runs`` into ``folder``.

    Args:
        runs: ``{variant: {seed: History}}`` from :func:`~alvae_pl.analysis.history.load_experiment`.
        folder: the report folder, created if needed; earlier TensorBoard event files in it are replaced.
        baseline: the variant the others are compared with, seed by seed.
        metrics: history columns to report; those without any value (e.g. test metrics of runs that did not
            evaluate on the test split) are skipped and listed in ``Report.skipped``.
        alpha: significance level; p-values below it are bold.
        title: heading of ``report.md``.
        tensorboard: also log figures and tables to a SummaryWriter in ``folder``.
        fraction: share of the best final mean that label efficiency asks each variant to reach.
        blocks: what a block of the rank tests is, ``"seed"`` or ``"round"`` (see ``critical_difference``).
        main_metric: the metric the stopping table counts as lost (default: the first of ``metrics`` with values).

    Raises:
        ValueError: ``baseline`` has no runs, or no metric has values.
    """
    if baseline not in runs:
        raise ValueError(f"baseline {baseline!r} has no runs; choose one of {list(runs)}")
    # Checked before anything is written, so that a typo does not leave half a report.
    if not (0.0 < alpha < 1.0 and 0.0 < fraction <= 1.0):
        raise ValueError(f"alpha must lie in (0, 1) and fraction in (0, 1], got alpha={alpha}, fraction={fraction}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = Report(folder)
    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        # The report is regenerated whole; old event files would show stale figures beside the new ones.
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        writer = SummaryWriter(log_dir=str(folder))
    try:
        for metric in metrics:
            if not _has_values(runs, metric):
                report.skipped[metric] = "no values in the histories"
                continue
            figure = plot_curves(runs, metric, folder / f"curves_{metric}.png")
            report.figures[metric] = folder / f"curves_{metric}.png"
            if writer is not None:
                figure_to_tensorboard(figure, writer, f"curves/{metric}")
            if len(runs) < 2:
                report.skipped[metric] = f"only {baseline!r} has runs: nothing to compare"
                continue
            rows = compare_variants(runs, metric, baseline, alpha)
            markdown = to_markdown(rows, alpha)
            report.markdown[metric] = markdown
            report.tables[metric] = atomic_write_text(folder / f"comparison_{metric}.md", markdown)
            write_table_csv(rows, folder / f"comparison_{metric}.csv")
            areas = compare_areas(runs, metric, baseline, alpha)
            report.area_markdown[metric] = area_markdown(areas, alpha)
            atomic_write_text(folder / f"area_{metric}.md", report.area_markdown[metric])
            write_area_csv(areas, folder / f"area_{metric}.csv")
            setting = title or folder.parent.name
            report.sections[metric] = write_sections({setting: runs}, metric, folder, alpha, fraction, blocks, baseline)
            if writer is not None:
                for name, text in (
                    ("efficiency", report.sections[metric].efficiency),
                    ("penalty", report.sections[metric].penalty),
                    ("ranks", report.sections[metric].ranks),
                ):
                    if text is not None:
                        writer.add_text(f"{name}/{metric}", text)
            if writer is not None:
                writer.add_text(f"comparison/{metric}", markdown)
    finally:
        if writer is not None:
            writer.close()
    if not report.figures:
        raise ValueError(f"none of the metrics {list(metrics)} has values in the histories; check the runs")
    lost = main_metric if main_metric is not None and _has_values(runs, main_metric) else next(iter(report.figures))
    stops = stopping_table(runs, report_rules(lost), lost)
    report.stopping_markdown = stopping_markdown(stops)
    atomic_write_text(folder / "stopping.md", report.stopping_markdown)
    write_stopping_csv(stops, folder / "stopping.csv")
    balance = class_balance_table(runs)
    if balance:
        report.class_balance_markdown = class_balance_markdown(balance)
        atomic_write_text(folder / "class_balance.md", report.class_balance_markdown)
        write_class_balance_csv(balance, folder / "class_balance.csv")
    atomic_write_text(folder / "report.md", _report_page(runs, report, baseline, title))
    return report


def _report_page(runs: Runs, report: Report, baseline: str, title: str | None) -> str:
    seeds = sorted({seed for variant_seeds in runs.values() for seed in variant_seeds})
    lines = [
        f"# {title or 'Active-learning comparison'}",
        "",
        f"Variants: {', '.join(f'{v} ({len(s)} seeds)' for v, s in runs.items())}; baseline {baseline}; "
        f"seeds {seeds}. Each variant's run of seed k starts from the same initial labels (paired design).",
        "",
    ]
    unfinished = unfinished_runs(runs)
    if unfinished:
        lines += [f"Still running (partial histories): {', '.join(unfinished)}.", ""]
    for metric, figure in report.figures.items():
        lines += [f"## {metric}", "", f"![{metric}]({figure.name})", ""]
        if metric in report.markdown:
            lines += [report.area_markdown[metric], report.markdown[metric]]
            lines += report.sections[metric].page_lines()
        elif metric in report.skipped:
            lines += [f"No table: {report.skipped[metric]}.", ""]
    if report.class_balance_markdown:
        lines += ["## Classes acquired", "", report.class_balance_markdown]
    if report.stopping_markdown:
        lines += ["## Stopping rules", "", report.stopping_markdown]
    return "\n".join(lines)
