"""Multi-seed summaries and paired significance tests between active-learning variants.

Seeds are shared across variants: seed k of every variant starts from the same initial labels, so variant
and baseline are compared seed by seed (paired t-test and Wilcoxon signed-rank test on the differences).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np
from scipy import stats

from alvae_pl.analysis.history import Runs, check_metric
from alvae_pl.atomic_files import atomic_write_text, write_csv

# Differences smaller than this (relative to their size) are float noise from reading/subtracting CSV values.
_RELATIVE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class SummaryRow:
    """One variant at one label count, over every seed that reached it with a finite value.

    ``ci_low``/``ci_high`` are the ``level`` confidence band of the mean (NaN with fewer than two seeds).
    """

    variant: str
    labels: int
    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class ComparisonRow:
    """A variant against the baseline at one label count, over the seeds both ran (pairs).

    Means and standard deviations (ddof=1) are over the paired seeds only, so ``mean_difference``
    (variant - baseline) is exactly the mean of the differences that the tests see; ``difference_ci_*`` is its
    95% paired confidence band. ``t_pvalue`` is the paired t-test, ``wilcoxon_pvalue`` the two-sided Wilcoxon
    signed-rank test (zero differences dropped). Both are 1.0 when every difference is zero and NaN with fewer
    than two pairs; ``t_pvalue`` is also NaN when every pair differs by the same non-zero amount (no variance,
    the t statistic is undefined). ``significant`` is ``t_pvalue < alpha``; note that with 5 pairs the
    Wilcoxon test cannot go below p = 0.0625.
    """

    metric: str
    labels: int
    baseline: str
    variant: str
    n_pairs: int
    seeds: tuple[int, ...]
    baseline_mean: float
    baseline_std: float
    variant_mean: float
    variant_std: float
    mean_difference: float
    difference_ci_low: float
    difference_ci_high: float
    t_pvalue: float
    wilcoxon_pvalue: float
    significant: bool


def sample_std(values: np.ndarray) -> float:
    """Standard deviation with ddof=1 of ``[n]`` values; NaN for n < 2 (instead of numpy's warning)."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan


def confidence_band(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` with ``mean ± t_{(1+level)/2, n-1} * std / sqrt(n)`` over ``[n]`` values.

    The band is NaN for n < 2 (no spread to estimate); the mean is NaN for n = 0.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    standard_error = sample_std(values) / math.sqrt(len(values))
    if standard_error == 0:  # scipy wants a positive scale; no spread is a band of width 0
        return mean, mean, mean
    low, high = stats.t.interval(level, df=len(values) - 1, loc=mean, scale=standard_error)
    return mean, float(low), float(high)


def paired_pvalues(baseline: np.ndarray, variant: np.ndarray) -> tuple[float, float]:
    """Two-sided ``(paired t-test p, Wilcoxon signed-rank p)`` for ``[n]`` paired values, without warnings.

    Degenerate cases, which scipy answers with warnings or infinities: n < 2 -> (NaN, NaN); all
    differences zero -> (1.0, 1.0); all differences equal and non-zero -> t-test NaN.
    """
    baseline = np.asarray(baseline, dtype=np.float64)
    variant = np.asarray(variant, dtype=np.float64)
    if baseline.shape != variant.shape or baseline.ndim != 1:
        raise ValueError(f"paired values need two 1-d arrays of one length, got {baseline.shape} and {variant.shape}")
    if len(baseline) < 2:
        return math.nan, math.nan
    differences = variant - baseline
    scale = max(1.0, float(np.max(np.abs(baseline))), float(np.max(np.abs(variant))))
    if np.all(np.abs(differences) <= _RELATIVE_TOLERANCE * scale):
        return 1.0, 1.0
    with warnings.catch_warnings():
        # Ties and zeros make scipy warn about its normal approximation; the p-value is still the one wanted.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        if np.ptp(differences) <= _RELATIVE_TOLERANCE * scale:
            t_pvalue = math.nan
        else:
            t_pvalue = float(stats.ttest_rel(variant, baseline).pvalue)
        try:
            wilcoxon_pvalue = float(stats.wilcoxon(differences).pvalue)
        except ValueError:
            wilcoxon_pvalue = math.nan
    return t_pvalue, wilcoxon_pvalue


def summarize(runs: Runs, metric: str, level: float = 0.95) -> list[SummaryRow]:
    """Per variant and label count: mean, std (ddof=1), n and confidence band over all its seeds.

    Every seed counts (paired or not); NaN values (a metric a round did not record) are left out.
    Rows are ordered by variant (as in ``runs``), then by number of labels.
    """
    check_metric(runs, metric)
    rows: list[SummaryRow] = []
    for variant, seeds in runs.items():
        values_by_labels: dict[int, list[float]] = {}
        for history in seeds.values():
            for labels, value in history.values_by_labels(metric).items():
                if math.isfinite(value):
                    values_by_labels.setdefault(labels, []).append(value)
        for labels in sorted(values_by_labels):
            values = np.asarray(values_by_labels[labels])
            mean, low, high = confidence_band(values, level)
            rows.append(SummaryRow(variant, labels, mean, sample_std(values), len(values), low, high))
    return rows


def compare_variants(runs: Runs, metric: str, baseline: str, alpha: float = 0.05) -> list[ComparisonRow]:
    """Compare every other variant with ``baseline`` seed by seed, at each label count all paired seeds reached.

    Args:
        runs: ``{variant: {seed: History}}`` from :func:`~alvae_pl.analysis.history.load_experiment`.
        metric: a history column, e.g. ``"val_accuracy"``.
        baseline: the variant the others are compared with, e.g. ``"coreset"``.
        alpha: significance level for the ``significant`` flag.

    Returns:
        One :class:`ComparisonRow` per (label count, variant), ordered by label count then variant. Only seeds
        present in both variants are paired; a pair where either value is NaN is left out of that row.
    """
    check_metric(runs, metric)
    if baseline not in runs:
        raise ValueError(f"baseline {baseline!r} has no runs; choose one of {list(runs)}")
    others = [variant for variant in runs if variant != baseline]
    if not others:
        raise ValueError(f"only the baseline {baseline!r} has runs; a comparison needs a second variant")
    rows: list[ComparisonRow] = []
    for variant in others:
        seeds = sorted(set(runs[baseline]) & set(runs[variant]))
        if not seeds:
            raise ValueError(
                f"{variant!r} and {baseline!r} share no seed (seeds {sorted(runs[variant])} vs "
                f"{sorted(runs[baseline])}); run both with the same seeds for a paired comparison"
            )
        base_values = [runs[baseline][seed].values_by_labels(metric) for seed in seeds]
        variant_values = [runs[variant][seed].values_by_labels(metric) for seed in seeds]
        shared = set.intersection(*(set(values) for values in base_values + variant_values))
        for labels in sorted(shared):
            pairs = [
                (seed, b[labels], v[labels])
                for seed, b, v in zip(seeds, base_values, variant_values, strict=True)
                if math.isfinite(b[labels]) and math.isfinite(v[labels])
            ]
            base = np.asarray([b for _, b, _ in pairs], dtype=np.float64)
            other = np.asarray([v for _, _, v in pairs], dtype=np.float64)
            difference, low, high = confidence_band(other - base)
            t_pvalue, wilcoxon_pvalue = paired_pvalues(base, other)
            rows.append(
                ComparisonRow(
                    metric=metric,
                    labels=labels,
                    baseline=baseline,
                    variant=variant,
                    n_pairs=len(pairs),
                    seeds=tuple(seed for seed, _, _ in pairs),
                    baseline_mean=float(np.mean(base)) if len(base) else math.nan,
                    baseline_std=sample_std(base),
                    variant_mean=float(np.mean(other)) if len(other) else math.nan,
                    variant_std=sample_std(other),
                    mean_difference=difference,
                    difference_ci_low=low,
                    difference_ci_high=high,
                    t_pvalue=t_pvalue,
                    wilcoxon_pvalue=wilcoxon_pvalue,
                    significant=bool(t_pvalue < alpha),
                )
            )
    if not rows:
        raise ValueError(f"the variants share no label count for {metric!r}; were they run with the same budget?")
    rows.sort(key=lambda row: (row.labels, others.index(row.variant)))
    return rows


@dataclass(frozen=True)
class AreaComparison:
    """One number per learning curve: the normalised area under it, i.e. the mean of ``metric`` over the label
    counts every run reached (the usual active-learning summary), per variant and seed, and each variant against
    the baseline over the paired seeds (``rows``: ``labels`` holds the number of label counts averaged)."""

    metric: str
    label_counts: tuple[int, ...]
    areas: dict[str, dict[int, float]]  # variant -> seed -> area
    rows: list[ComparisonRow]


def compare_areas(runs: Runs, metric: str, baseline: str, alpha: float = 0.05) -> AreaComparison:
    """Normalised areas under every run's curve of ``metric``, compared with ``baseline`` seed by seed.

    A run missing a finite value at one of the shared label counts (an unfinished run) gets no area.
    """
    check_metric(runs, metric)
    curves = {
        variant: {seed: h.values_by_labels(metric) for seed, h in seeds.items()} for variant, seeds in runs.items()
    }
    shared = set.intersection(*(set(curve) for seeds in curves.values() for curve in seeds.values()))
    if not shared:
        raise ValueError(f"the runs share no label count for {metric!r}; were they run with the same budget?")
    counts = tuple(sorted(shared))
    areas = {
        variant: {
            seed: float(np.mean([curve[n] for n in counts]))
            for seed, curve in seeds.items()
            if all(math.isfinite(curve[n]) for n in counts)
        }
        for variant, seeds in curves.items()
    }
    # The comparison machinery, on one-row "histories": every area sits at the same pseudo label count.
    area_runs = {
        variant: {seed: _AreaHistory(len(counts), value, metric) for seed, value in seeds.items()}
        for variant, seeds in areas.items()
    }
    rows = compare_variants(area_runs, metric, baseline, alpha)  # type: ignore[arg-type]
    return AreaComparison(metric, counts, areas, rows)


@dataclass(frozen=True)
class _AreaHistory:
    """Stands in for a ``History`` holding one value at one label count."""

    labels: int
    value: float
    metric: str

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.metric,)

    def values_by_labels(self, metric: str) -> dict[int, float]:
        return {self.labels: self.value}


def area_markdown(comparison: AreaComparison, alpha: float = 0.05) -> str:
    """The area table: each variant's mean ± sd and per-seed areas, the difference to the baseline and p-values."""
    baseline = comparison.rows[0].baseline if comparison.rows else ""
    lines = [
        f"**Area under the {comparison.metric} curve**, normalised: the mean of {comparison.metric} over the "
        f"{len(comparison.label_counts)} label counts {comparison.label_counts[0]}-{comparison.label_counts[-1]}.",
        "",
        "| variant | seeds | mean ± sd | per seed | difference to " + baseline + " [95% CI] | t-test p | Wilcoxon p |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    rows = {row.variant: row for row in comparison.rows}
    for variant, seeds in comparison.areas.items():
        values = np.asarray(list(seeds.values()))
        per_seed = ", ".join(f"{seed}: {value:.4f}" for seed, value in sorted(seeds.items()))
        cells = [variant, str(len(values)), _format_mean(float(np.mean(values)), sample_std(values)), per_seed]
        row = rows.get(variant)
        if row is None:
            cells += ["(baseline)", "", ""]
        else:
            low, high = row.difference_ci_low, row.difference_ci_high
            ci = "" if math.isnan(low) else f" [{low:+.4f}, {high:+.4f}]"
            cells += [
                f"{row.mean_difference:+.4f}{ci}",
                _format_p(row.t_pvalue, alpha),
                _format_p(row.wilcoxon_pvalue, alpha),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_area_csv(comparison: AreaComparison, path: str | Path) -> Path:
    """One row per (variant, seed): its area, and the variant's paired p-values against the baseline."""
    rows = {row.variant: row for row in comparison.rows}
    header = ["metric", "variant", "seed", "area", "label_counts", "t_pvalue", "wilcoxon_pvalue"]
    lines = []
    for variant, seeds in comparison.areas.items():
        row = rows.get(variant)
        for seed, area in sorted(seeds.items()):
            pvalues = [row.t_pvalue, row.wilcoxon_pvalue] if row is not None else [math.nan, math.nan]
            counts = ";".join(str(n) for n in comparison.label_counts)
            lines.append([comparison.metric, variant, seed, area, counts, *pvalues])
    return write_csv(path, header, lines)


def write_table_csv(rows: Sequence[ComparisonRow], path: str | Path) -> Path:
    """Write comparison rows to ``path`` atomically: one column per field, seeds joined by ``;``, NaN empty."""
    header = [field.name for field in fields(ComparisonRow)]

    def cells(row: ComparisonRow) -> list[object]:
        values = list(astuple(row))
        values[header.index("seeds")] = ";".join(str(seed) for seed in row.seeds)
        return values

    return write_csv(path, header, (cells(row) for row in rows))


def _format_p(value: float, alpha: float) -> str:
    if math.isnan(value):
        return "n/a"
    text = f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"
    return f"**{text}**" if value < alpha else text


def _format_mean(mean: float, std: float) -> str:
    if math.isnan(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f}"


def to_markdown(rows: Sequence[ComparisonRow], alpha: float = 0.05) -> str:
    """A markdown table of comparison rows (one metric, one baseline); p-values below ``alpha`` in bold."""
    if not rows:
        raise ValueError("no comparison rows to format; compute them with compare_variants(runs, metric, baseline)")
    metrics = {row.metric for row in rows}
    baselines = {row.baseline for row in rows}
    if len(metrics) != 1 or len(baselines) != 1:
        raise ValueError(f"format one metric against one baseline per table, got {metrics} and {baselines}")
    metric, baseline = rows[0].metric, rows[0].baseline
    header = [
        "labels",
        "variant",
        "pairs",
        f"{baseline} (baseline)",
        "variant mean ± sd",
        "difference [95% CI]",
        "t-test p",
        "Wilcoxon p",
    ]
    lines = [
        f"**{metric}**: mean ± sd over paired seeds; difference = variant − {baseline}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if name not in ("variant",) else "---" for name in header) + "|",
    ]
    for row in rows:
        if math.isnan(row.difference_ci_low):
            difference = f"{row.mean_difference:+.4f}"
        else:
            difference = f"{row.mean_difference:+.4f} [{row.difference_ci_low:+.4f}, {row.difference_ci_high:+.4f}]"
        cells = [
            str(row.labels),
            row.variant,
            str(row.n_pairs),
            _format_mean(row.baseline_mean, row.baseline_std),
            _format_mean(row.variant_mean, row.variant_std),
            difference,
            _format_p(row.t_pvalue, alpha),
            _format_p(row.wilcoxon_pvalue, alpha),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Bold: p < {alpha:g} (two-sided paired t-test / Wilcoxon signed-rank test)."]
    return "\n".join(lines) + "\n"


def write_markdown(rows: Sequence[ComparisonRow], path: str | Path, alpha: float = 0.05) -> Path:
    """Write :func:`to_markdown` to ``path`` atomically."""
    return atomic_write_text(path, to_markdown(rows, alpha))
