"""A validation-metric plateau: stop once labels stop improving the validation metric."""

from __future__ import annotations

import math
from collections.abc import Sequence

from alvae_pl.stopping.rule import Columns, StoppingRule


def metric_gains(values: Sequence[float]) -> list[float]:
    """Each round's gain over the best earlier round, ``[R]``: ``values[r] - max(values[:r])`` (NaN for round 0, and
    where the value or every earlier one is missing)."""
    gains, best = [], -math.inf
    for value in values:
        gains.append(value - best if math.isfinite(value) and math.isfinite(best) else math.nan)
        if math.isfinite(value):
            best = max(best, value)
    return gains


class ValidationPlateau(StoppingRule):
    """Stops once ``metric`` has gained at most ``min_delta`` over its best earlier round for ``rounds`` successive
    rounds (early stopping, with rounds of labels in place of epochs).

    Its values are computed from the ``metric`` column itself, so it applies to any finished run's history; the loop
    also writes the gain of the task's main validation metric as column ``stop_val_gain`` (``val_accuracy``;
    ``val_auroc`` for multi-label tasks, whose accuracy an all-negative model already scores high).

    Args:
        metric: a history column, higher is better (``val_accuracy``, ``val_auroc``).
        min_delta: a gain of at most this much counts as no improvement.
        rounds: successive rounds without improvement before stopping.
    """

    column = "stop_val_gain"
    uses_stop_set = False

    def __init__(self, metric: str = "val_accuracy", min_delta: float = 0.0, rounds: int = 2) -> None:
        super().__init__(rounds)
        if min_delta < 0:
            raise ValueError(f"ValidationPlateau: min_delta must be >= 0, got {min_delta}")
        self.metric = metric
        self.min_delta = min_delta

    def values(self, history: Columns) -> list[float]:
        if self.metric not in history:
            return [math.nan] * len(history["labels"])
        return metric_gains([float(v) for v in history[self.metric]])

    def holds(self, value: float) -> bool:
        return value <= self.min_delta

    def describe(self, value: float) -> str:
        return f"{self.metric} gain {value:+.4f} <= {self.min_delta:g}"
