"""Smallest margin between the two most probable labels: an uncertainty heuristic every survey reports."""

from __future__ import annotations

import torch
from torch import Tensor

from alvae_pl.acquisition.prediction_heuristic import PredictionHeuristic


def prediction_margin(logits: Tensor, multilabel: bool) -> Tensor:
    """``[N]`` from logits ``[N, K]``: the probability of the most likely label minus that of the second.

    Multi-class: the gap between the two largest softmax probabilities. Multi-label: the same gap between the two
    most likely joint labels (0/1 vectors over the K findings), with findings independent given the image, as
    ``prediction_entropy`` treats them. The most likely joint label takes each finding's likelier value, with
    probability ``P1 = prod_k c_k`` where ``c_k = max(p_k, 1 - p_k)``; the second flips the least confident
    finding, ``P2 = P1 (1 - c_min) / c_min``; so the margin is ``P1 (2 c_min - 1) / c_min``.
    """
    logits = logits.float()
    if multilabel:
        # log c_k = logsigmoid(|logit|): exact for saturated logits, where 1 - sigmoid would round to 0.
        log_confidence = torch.nn.functional.logsigmoid(logits.abs())
        least_confident = log_confidence.min(dim=1).values.exp()
        return log_confidence.sum(dim=1).exp() * (2 * least_confident - 1) / least_confident
    top_two = logits.softmax(dim=1).topk(2, dim=1).values
    return top_two[:, 0] - top_two[:, 1]


class Margin(PredictionHeuristic):
    """Labels the ``budget`` unlabeled images with the smallest prediction margin (``prediction_margin``).

    Scores are ``1 - margin``, so that the picked images score highest (ties: lowest index).
    """

    key = "margin"
    measure = staticmethod(prediction_margin)

    @staticmethod
    def score(measured: Tensor) -> Tensor:
        return 1 - measured
