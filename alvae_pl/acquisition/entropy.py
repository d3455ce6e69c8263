"""Maximum entropy of the task model's predictions: the classic uncertainty heuristic."""

from __future__ import annotations

import torch
from torch import Tensor

from alvae_pl.acquisition.heuristic import Heuristic, Selection, top_scoring
from alvae_pl.models.task_model import TaskModel


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


class Entropy(Heuristic):
    """Labels the ``budget`` unlabeled images whose predictions have the highest entropy (ties: lowest index)."""

    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        return {"entropy": prediction_entropy(model(images), multilabel=model.task == "multilabel")}

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        return top_scoring(candidates["entropy"], budget)
