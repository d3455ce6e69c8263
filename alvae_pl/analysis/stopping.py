"""Where each stopping rule would have ended each run, and what that would have saved and cost.

Computed from ``history.csv`` alone (:mod:`alvae_pl.stopping` rules read only history columns), so it applies to
finished runs, whether or not they were run with a rule: the labels at the stop, the labels saved against the run's
last round, and the metric lost (its value in the last round minus its value at the stop; negative: stopping would
have been better).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from alvae_pl.analysis.history import History, Runs
from alvae_pl.atomic_files import write_csv
from alvae_pl.stopping import (
    MaxUncertainty,
    MeanUncertainty,
    StabilizingPredictions,
    StoppingRule,
    ValidationPlateau,
)


def report_rules(metric: str = "val_accuracy") -> list[StoppingRule]:
    """The rules a report evaluates: each criterion with its defaults; the plateau on the validation split's version
    of ``metric`` (a stopping rule never reads the test split)."""
    validation = "val_" + metric.removeprefix("test_").removeprefix("val_")
    return [StabilizingPredictions(), MaxUncertainty(), MeanUncertainty(), ValidationPlateau(metric=validation)]


@dataclass(frozen=True)
class StopRow:
    """One rule on one run.

    ``stop_labels`` is ``None`` when the rule never fires (then nothing is saved or lost); ``metric_lost`` is
    ``final_metric - metric_at_stop``; ``measured`` is false when the history has no value of the rule's criterion
    (a run recorded before the ``stop_*`` columns existed).
    """

    rule: str
    variant: str
    seed: int
    stop_round: int | None
    stop_labels: int | None
    final_labels: int
    labels_saved: int
    metric: str
    metric_at_stop: float
    final_metric: float
    metric_lost: float
    measured: bool = True


def stop_row(rule: StoppingRule, history: History, metric: str, variant: str = "", seed: int = 0) -> StopRow:
    """Where ``rule`` stops ``history`` and what that saves (labels) and loses (``metric``)."""
    columns = {name: history.column(name).tolist() for name in history.column_names}
    final = float(history.column(metric)[-1]) if metric in history.columns else math.nan
    final_labels = int(history.labels[-1])
    index = rule.stop_round(columns)
    if index is None:
        measured = any(math.isfinite(value) for value in rule.values(columns))
        return StopRow(repr(rule), variant, seed, None, None, final_labels, 0, metric, final, final, 0.0, measured)
    at_stop = float(history.column(metric)[index]) if metric in history.columns else math.nan
    labels = int(history.labels[index])
    return StopRow(
        repr(rule), variant, seed, index, labels, final_labels, final_labels - labels, metric, at_stop, final,
        final - at_stop,
    )  # fmt: skip


def stopping_table(runs: Runs, rules: Sequence[StoppingRule], metric: str) -> list[StopRow]:
    """:func:`stop_row` for every rule (outer), variant and seed."""
    return [
        stop_row(rule, history, metric, variant, seed)
        for rule in rules
        for variant, seeds in runs.items()
        for seed, history in seeds.items()
    ]


def stopping_markdown(rows: Sequence[StopRow]) -> str:
    """Two tables of :func:`stopping_table`'s rows: per rule and variant (how many runs the rule ends before their
    last round, the mean labels saved, the mean and worst metric lost), then one line per rule and run."""
    metric = rows[0].metric if rows else ""
    lines = [
        f"**Stopping rules**: where each rule would have ended each run, the labels that saves against the run's "
        f"last round and the {metric} it loses (last round minus at the stop: positive, stopping would have cost "
        "that much; never: the rule did not fire; not measured: the histories lack its column).",
        "",
        f"| rule | variant | runs | ended early | mean labels saved | mean {metric} lost | worst lost |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, str], list[StopRow]] = {}
    for row in rows:
        groups.setdefault((row.rule, row.variant), []).append(row)
    for (rule, variant), group in groups.items():
        if not any(row.measured for row in group):
            lines.append(f"| {rule} | {variant} | {len(group)} | not measured | | | |")
            continue
        early = sum(row.labels_saved > 0 for row in group)
        saved = sum(row.labels_saved for row in group) / len(group)
        lost = [row.metric_lost for row in group]
        lines.append(
            f"| {rule} | {variant} | {len(group)} | {early} | {saved:.1f} | {sum(lost) / len(lost):+.4f} | "
            f"{max(lost):+.4f} |"
        )
    lines += [
        "",
        f"| rule | variant | seed | stops at (labels) | labels saved | {metric} at stop | last | lost |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        never = "never" if row.measured else "not measured"
        stop = never if row.stop_labels is None else f"{row.stop_labels} (round {row.stop_round})"
        lines.append(
            f"| {row.rule} | {row.variant} | {row.seed} | {stop} | {row.labels_saved} | {row.metric_at_stop:.4f} | "
            f"{row.final_metric:.4f} | {row.metric_lost:+.4f} |"
        )
    return "\n".join(lines) + "\n"


def write_stopping_csv(rows: Sequence[StopRow], path: str | Path) -> Path:
    """The rows, one column per field (a rule that never fires: empty stop cells), written atomically."""
    return write_csv(path, [field.name for field in fields(StopRow)], (astuple(row) for row in rows))
