"""Random sampling: the baseline every heuristic must beat."""

from __future__ import annotations

import torch
from torch import Tensor

from alvae_pl.acquisition.heuristic import Heuristic, Selection
from alvae_pl.models.task_model import TaskModel


class RandomSampling(Heuristic):
    """Labels ``budget`` unlabeled images drawn uniformly, from the loop's (seed, round) generator."""

    uses_model = False

    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        return {}

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        positions = torch.randperm(len(candidates["index"]), generator=generator)[:budget]
        return Selection(positions, torch.zeros(budget))
