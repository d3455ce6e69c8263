"""Label efficiency: how many labels each heuristic needs to reach a given fraction of the best final metric.

The target is ``fraction x`` the best final value over heuristics: the largest, over heuristics, of the mean over
seeds at the last label count every heuristic reached. A curve reaches it at the first label count where it is at
or above the target, linearly interpolated between that round and the one before (a curve that starts above it
reaches it at its first label count; one that never does gets no value, '—' in the table). Computed on each
heuristic's mean curve and on each seed's own curve.

Why 0.95 by default: one round's mean over five seeds moves by about 0.01-0.02 of accuracy between reruns on the
digits (its standard error), i.e. by about 2% of the metric near the end of a curve. A target of 0.98 x the best
would then often be reached, or missed, by noise in the last one or two rounds; 0.95 sits outside that noise
while still asking for nearly the final performance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alvae_pl.analysis.history import Runs, check_metric
from alvae_pl.atomic_files import write_csv

DEFAULT_FRACTION = 0.95


def labels_to_reach(labels: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray, target: float) -> float:
    """The first number of labels at which the curve ``values`` (``[R]`` at ``labels`` ``[R]``, increasing) reaches
    ``target``, linearly interpolated between rounds; NaN if it never does. NaN values are skipped."""
    labels = np.asarray(labels, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if labels.shape != values.shape or labels.ndim != 1:
        raise ValueError(f"labels and values must be 1-d of one length, got {labels.shape} and {values.shape}")
    finite = np.isfinite(values)
    labels, values = labels[finite], values[finite]
    reached = np.flatnonzero(values >= target)
    if len(reached) == 0:
        return math.nan
    index = int(reached[0])
    if index == 0:
        return float(labels[0])
    n0, n1, v0, v1 = labels[index - 1], labels[index], values[index - 1], values[index]
    return float(n0 + (target - v0) / (v1 - v0) * (n1 - n0))  # v0 < target <= v1, so v1 > v0


@dataclass(frozen=True)
class LabelEfficiency:
    """What :func:`label_efficiency` found.

    Attributes:
        metric: the history column (higher is better).
        fraction: the share of the best final value to reach.
        final_labels: the last label count every heuristic's mean curve reached.
        best: the heuristic with the best mean there.
        target: ``fraction * best final value``.
        mean_curve: heuristic -> labels at which its mean curve reaches ``target`` (NaN: never).
        per_seed: heuristic -> seed -> labels at which that seed's curve reaches it (NaN: never).
        baseline: the heuristic the ratios are taken against, or None.
    """

    metric: str
    fraction: float
    final_labels: int
    best: str
    target: float
    mean_curve: dict[str, float]
    per_seed: dict[str, dict[int, float]]
    baseline: str | None = None


def mean_curve(seeds: dict[int, dict[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels [R], mean [R])`` over a heuristic's seeds, at the label counts where every seed has a finite value."""
    shared = set.intersection(*(set(curve) for curve in seeds.values()))
    counts = sorted(n for n in shared if all(math.isfinite(curve[n]) for curve in seeds.values()))
    means = [float(np.mean([curve[n] for curve in seeds.values()])) for n in counts]
    return np.asarray(counts, dtype=np.int64), np.asarray(means, dtype=np.float64)


def label_efficiency(
    runs: Runs, metric: str, fraction: float = DEFAULT_FRACTION, baseline: str | None = None
) -> LabelEfficiency:
    """Labels each variant of ``runs`` needs to reach ``fraction`` of the best final mean ``metric`` (module
    docstring); ``baseline``, if given, is the variant the table's ratios divide by."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}; e.g. 0.95 for 95% of the best final value")
    check_metric(runs, metric)
    if baseline is not None and baseline not in runs:
        raise ValueError(f"baseline {baseline!r} has no runs; choose one of {list(runs)}")
    curves = {
        name: {seed: history.values_by_labels(metric) for seed, history in seeds.items()}
        for name, seeds in runs.items()
    }
    means = {name: mean_curve(seeds) for name, seeds in curves.items()}
    shared = set.intersection(*(set(labels.tolist()) for labels, _ in means.values()))
    if not shared:
        raise ValueError(f"the variants' mean curves of {metric!r} share no label count; were they run alike?")
    final = max(shared)
    finals = {name: float(values[labels.tolist().index(final)]) for name, (labels, values) in means.items()}
    best = max(finals, key=lambda name: finals[name])
    target = fraction * finals[best]
    return LabelEfficiency(
        metric=metric,
        fraction=fraction,
        final_labels=final,
        best=best,
        target=target,
        mean_curve={name: labels_to_reach(labels, values, target) for name, (labels, values) in means.items()},
        per_seed={
            name: {
                seed: labels_to_reach(sorted(curve), [curve[n] for n in sorted(curve)], target)
                for seed, curve in seeds.items()
            }
            for name, seeds in curves.items()
        },
        baseline=baseline,
    )


def _labels(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0f}"


def efficiency_markdown(result: LabelEfficiency) -> str:
    """One row per heuristic: labels to reach the target on the mean curve, per seed, and against the baseline."""
    lines = [
        f"**Label efficiency** ({result.metric}): labels needed to reach {result.fraction:g} x the best final mean "
        f"({result.best}: {result.target / result.fraction:.4f} at {result.final_labels} labels), i.e. "
        f"{result.target:.4f}; interpolated linearly between rounds, '—' if never reached.",
        "",
        "| heuristic | labels (mean curve) | seeds reaching | per seed |"
        + (f" vs {result.baseline} |" if result.baseline else ""),
        "|---|---:|---:|---|" + ("---:|" if result.baseline else ""),
    ]
    reference = result.mean_curve.get(result.baseline, math.nan) if result.baseline else math.nan
    for name, labels in result.mean_curve.items():
        seeds = result.per_seed[name]
        reaching = sum(not math.isnan(value) for value in seeds.values())
        per_seed = ", ".join(f"{seed}: {_labels(value)}" for seed, value in sorted(seeds.items()))
        row = f"| {name} | {_labels(labels)} | {reaching}/{len(seeds)} | {per_seed} |"
        if result.baseline:
            ratio = labels / reference if not (math.isnan(labels) or math.isnan(reference)) else math.nan
            row += " (baseline) |" if name == result.baseline else (" — |" if math.isnan(ratio) else f" {ratio:.2f}x |")
        lines.append(row)
    return "\n".join(lines) + "\n"


def write_efficiency_csv(result: LabelEfficiency, path: str | Path) -> Path:
    """One row per (heuristic, seed) and one per heuristic's mean curve (seed empty); NaN labels are empty cells."""
    header = ["metric", "heuristic", "seed", "labels_to_reach", "target", "fraction", "final_labels"]
    rows: list[list[object]] = []
    for name, labels in result.mean_curve.items():
        common = [result.target, result.fraction, result.final_labels]
        rows.append([result.metric, name, None, labels, *common])
        rows += [[result.metric, name, seed, value, *common] for seed, value in sorted(result.per_seed[name].items())]
    return write_csv(path, header, rows)
