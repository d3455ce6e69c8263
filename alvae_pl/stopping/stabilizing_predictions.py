"""Stabilizing predictions (Bloodgood and Vijay-Shanker, 2009): stop once successive models agree on a stop set."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score
from torch import Tensor

from alvae_pl.stopping.rule import StoppingRule


def prediction_agreement(previous: Tensor, current: Tensor) -> float:
    """Cohen's kappa between two rounds' predictions on the same images.

    Args:
        previous: int64 predicted classes ``[S]`` (multi-class) or 0/1 findings ``[S, K]`` (multi-label).
        current: the same shape as ``previous``.

    Multi-label predictions are compared finding by finding, flattened to ``S * K`` binary decisions: a per-finding
    mean would be undefined for the rare findings a model never predicts in either round. Two identical prediction
    sets agree perfectly (kappa 1), also when they are constant, where Cohen's formula divides zero by zero.
    """
    if previous.shape != current.shape:
        raise ValueError(f"predictions of shape {tuple(previous.shape)} and {tuple(current.shape)} cannot be compared")
    a, b = previous.flatten().cpu().numpy(), current.flatten().cpu().numpy()
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b))


class StabilizingPredictions(StoppingRule):
    """Stops once the task model's predictions on the stop set agree with the previous round's, Cohen's kappa at least
    ``kappa``, for ``rounds`` successive rounds (the paper's defaults: 0.99 over a window of 3).

    Reads history column ``stop_kappa`` (empty in round 0, which has no previous round).
    """

    column = "stop_kappa"

    def __init__(self, kappa: float = 0.99, rounds: int = 3) -> None:
        super().__init__(rounds)
        if not -1.0 <= kappa <= 1.0:
            raise ValueError(f"StabilizingPredictions: kappa must lie in [-1, 1], got {kappa}")
        self.kappa = kappa

    def holds(self, value: float) -> bool:
        return value >= self.kappa

    def describe(self, value: float) -> str:
        return f"kappa {value:.4f} >= {self.kappa:g}"
