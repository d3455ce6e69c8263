"""Maximum entropy of the task model's predictions: the classic uncertainty heuristic."""

from __future__ import annotations

import torch
from torch import Tensor

from alvae_pl.acquisition.prediction_heuristic import PredictionHeuristic


def prediction_entropy(logits: Tensor, multilabel: bool) -> Tensor:
    """Entropy in nats of each prediction, ``[N]`` from logits ``[N, K]``.

    Multi-class: Shannon entropy of the softmax. Multi-label: the sum over findings of each finding's binary
    entropy, i.e. the entropy of the joint prediction when findings are independent given the image.
    """
    logits = logits.float()
    if multilabel:
        p = logits.sigmoid()
        # -p log p - (1-p) log(1-p), written with logsigmoid so that saturated logits give 0, not NaN.
        log_p, log_not_p = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
        return -(p * log_p + (1 - p) * log_not_p).sum(dim=1)
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


class Entropy(PredictionHeuristic):
    """Labels the ``budget`` unlabeled images whose predictions have the highest entropy (ties: lowest index)."""

    key = "entropy"
    measure = staticmethod(prediction_entropy)
