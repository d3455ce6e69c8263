"""Learning loss (Yoo and Kweon, 2019): label the images whose predicted loss is highest."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alvae_pl.acquisition.heuristic import Heuristic, Selection, top_scoring
from alvae_pl.models.task_model import TaskModel

if TYPE_CHECKING:
    from alvae_pl.data.label_pool import LabelPool


class LearningLoss(Heuristic):
    """Ranks unlabeled images by the task model's loss-prediction head (``model.loss_prediction: true``).

    With VAE features in the head (``model.init_args.vae``), this is the paper's VAE-augmented loss prediction;
    the heuristic itself does not change.

    Args:
        subset_size: rank only a random subset of this many unlabeled images, drawn from the round's generator
            (the reference uses 10,000); ``None`` ranks every unlabeled image.
    """

    def __init__(self, subset_size: int | None = None) -> None:
        if subset_size is not None and subset_size < 1:
            raise ValueError(f"subset_size must be at least 1 or null, got {subset_size}")
        self.subset_size = subset_size

    def candidates(self, unlabeled: Tensor, generator: torch.Generator, pool: LabelPool | None = None) -> Tensor:
        if self.subset_size is None or self.subset_size >= len(unlabeled):
            return unlabeled
        chosen = torch.randperm(len(unlabeled), generator=generator)[: self.subset_size]
        return unlabeled[chosen.sort().values]

    def check_model(self, model: TaskModel) -> None:
        if model.loss_head is None:
            raise ValueError("LearningLoss needs the loss-prediction head: set model.init_args.loss_prediction true")

    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        return {"predicted_loss": model.predict_loss(images)}

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        return top_scoring(candidates["predicted_loss"], budget)
