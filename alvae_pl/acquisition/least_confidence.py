"""Least confidence: the images whose most likely label is least probable."""

from __future__ import annotations

import torch
from torch import Tensor

from alvae_pl.acquisition.prediction_heuristic import PredictionHeuristic


def prediction_confidence(logits: Tensor, multilabel: bool) -> Tensor:
    """``[N]`` from logits ``[N, K]``: the probability of the most likely label.

    Multi-class: the largest softmax probability. Multi-label: the probability of the most likely joint label
    (each finding at its likelier value), ``prod_k max(p_k, 1 - p_k)``, with findings independent given the image,
    as ``prediction_entropy`` treats them.
    """
    logits = logits.float()
    if multilabel:
        return torch.nn.functional.logsigmoid(logits.abs()).sum(dim=1).exp()
    return logits.softmax(dim=1).max(dim=1).values


class LeastConfidence(PredictionHeuristic):
    """Labels the ``budget`` unlabeled images whose most likely label is least probable
    (``prediction_confidence``). Scores are ``1 - confidence`` (ties: lowest index)."""

    key = "confidence"
    measure = staticmethod(prediction_confidence)

    @staticmethod
    def score(measured: Tensor) -> Tensor:
        return 1 - measured
