"""The pool's uncertainty below a threshold (Zhu, Wang and Hovy, 2008): max-confidence and overall-uncertainty."""

from __future__ import annotations

import math

from torch import Tensor

from alvae_pl.acquisition.entropy import prediction_entropy
from alvae_pl.stopping.rule import StoppingRule


def normalized_uncertainty(logits: Tensor, multilabel: bool) -> Tensor:
    """Entropy of each prediction scaled to [0, 1], ``[N]`` from logits ``[N, K]``.

    Multi-class: the softmax's entropy over ``log K`` (1: uniform). Multi-label: the mean over findings of each
    finding's binary entropy over ``log 2``. One threshold then means the same for 10 classes or 14 findings.
    """
    classes = logits.shape[1]
    scale = classes * math.log(2) if multilabel else math.log(classes)
    return prediction_entropy(logits, multilabel) / scale


class _UncertaintyBelow(StoppingRule):
    """Stops once the stop set's unlabeled images' uncertainty (normalized entropy, 0..1) is at most ``threshold``
    for ``rounds`` successive rounds."""

    statistic = ""

    def __init__(self, threshold: float, rounds: int = 1) -> None:
        super().__init__(rounds)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"{type(self).__name__}: threshold is a normalized entropy in [0, 1], got {threshold}")
        self.threshold = threshold

    def holds(self, value: float) -> bool:
        return value <= self.threshold

    def describe(self, value: float) -> str:
        return f"{self.statistic} uncertainty {value:.4f} <= {self.threshold:g}"


class MaxUncertainty(_UncertaintyBelow):
    """Max-confidence: stops once even the most uncertain unlabeled image of the stop set has a normalized entropy of
    at most ``threshold``. Reads history column ``stop_max_uncertainty``."""

    column = "stop_max_uncertainty"
    statistic = "max"

    def __init__(self, threshold: float = 0.5, rounds: int = 1) -> None:
        super().__init__(threshold, rounds)


class MeanUncertainty(_UncertaintyBelow):
    """Overall-uncertainty: stops once the mean normalized entropy of the stop set's unlabeled images is at most
    ``threshold``. Reads history column ``stop_mean_uncertainty``."""

    column = "stop_mean_uncertainty"
    statistic = "mean"

    def __init__(self, threshold: float = 0.05, rounds: int = 1) -> None:
        super().__init__(threshold, rounds)
