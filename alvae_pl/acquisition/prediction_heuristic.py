"""What entropy, margin and least confidence share: one number per image from the task model's prediction."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alvae_pl.acquisition.heuristic import Heuristic, Selection, top_scoring

if TYPE_CHECKING:
    from alvae_pl.models.task_model import TaskModel


class PredictionHeuristic(Heuristic):
    """Measures each image's prediction (``measure``, kept under ``key``) and labels the ``budget`` images whose
    ``score`` of that measure is highest (ties: lowest index); the scores go into ``labeled.csv``."""

    key: str

    @staticmethod
    @abstractmethod
    def measure(logits: Tensor, multilabel: bool) -> Tensor:
        """``[N]`` from logits ``[N, K]``."""

    @staticmethod
    def score(measured: Tensor) -> Tensor:
        """Higher means picked first (default: the measure itself)."""
        return measured

    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        return {self.key: self.measure(model(images), multilabel=model.task == "multilabel")}

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        return top_scoring(self.score(candidates[self.key]), budget)
