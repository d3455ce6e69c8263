"""The interface of a stopping criterion: a value measured every round and a rule that ends the run on it."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

#: A run's history by column: name -> one value per round ``[R]`` (``history.csv``'s columns, or the loop's rows).
Columns = Mapping[str, Sequence[float]]


def rows_to_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """The loop's history rows (one dict per round) as columns; a value a row lacks, or one that is not a number, is
    NaN."""
    names = {name for row in rows for name in row}
    return {name: [_number(row.get(name)) for row in rows] for name in names}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


class StoppingRule(ABC):
    """Ends an active-learning run once its criterion has held for ``rounds`` successive rounds.

    A rule reads only the run's history (one value per round, :meth:`values`), so the loop that stops a run and the
    report that asks where a finished run would have stopped (:mod:`alvae_pl.analysis.stopping`) give the same
    answer. A round whose value is missing (NaN: not measured, or the first round of a criterion that compares with
    the round before) breaks the streak.

    Args:
        rounds: how many successive rounds the criterion must hold (at least 1).
    """

    def __init__(self, rounds: int = 1) -> None:
        if rounds < 1:
            raise ValueError(f"{type(self).__name__}: rounds must be at least 1, got {rounds}")
        self.rounds = rounds

    #: The history column the loop writes this criterion's measurement into.
    column: str = ""
    #: Whether the criterion needs the loop's stop set (predictions on a fixed sample of the unlabeled pool).
    uses_stop_set: bool = True

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in sorted(vars(self).items()))
        return f"{type(self).__name__}({settings})"

    def values(self, history: Columns) -> list[float]:
        """The criterion's value in each round ``[R]`` (NaN where it was not measured)."""
        labels = history["labels"]
        return [float(v) for v in history[self.column]] if self.column in history else [math.nan] * len(labels)

    @abstractmethod
    def holds(self, value: float) -> bool:
        """Whether a round with this (finite) value counts towards stopping."""

    @abstractmethod
    def describe(self, value: float) -> str:
        """The criterion met by ``value``, in words, e.g. ``kappa 0.9950 >= 0.99``."""

    def stop_round(self, history: Columns) -> int | None:
        """The index of the first round after which this rule ends the run, or ``None`` if it never does."""
        streak = 0
        for index, value in enumerate(self.values(history)):
            streak = streak + 1 if math.isfinite(value) and self.holds(value) else 0
            if streak >= self.rounds:
                return index
        return None

    def reason(self, history: Columns, index: int) -> str:
        """Why the run stopped after round ``index``, e.g. ``StabilizingPredictions: kappa 0.9950 >= 0.99 for 3 rounds
        at 400 labels``."""
        value = self.values(history)[index]
        rounds = f"{self.rounds} round{'s' if self.rounds > 1 else ''}"
        labels = int(history["labels"][index])
        return f"{type(self).__name__}: {self.describe(value)} for {rounds} at {labels} labels"


def first_stop(rules: Sequence[StoppingRule], history: Columns) -> tuple[int, str] | None:
    """``(round index, reason)`` of the earliest stop any of ``rules`` makes on ``history`` (the first rule listed wins
    a tie), or ``None``."""
    stops = [(rule.stop_round(history), position) for position, rule in enumerate(rules)]
    fired = [(index, position) for index, position in stops if index is not None]
    if not fired:
        return None
    index, position = min(fired)
    return index, rules[position].reason(history, index)
