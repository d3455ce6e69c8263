"""What core-set and MedAL share: a greedy pick, one image at a time, by distances in a feature space."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alvae_pl.acquisition.distances import DEFAULT_CHUNK_SIZE
from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.acquisition.heuristic import Heuristic, Selection

if TYPE_CHECKING:
    from alvae_pl.data.image_data import ImageData
    from alvae_pl.models.task_model import TaskModel

#: ``greedy(candidates [n, D], labeled [m, D], budget, generator, chunk_size) -> Selection``
GreedyPick = Callable[[Tensor, Tensor, int, "torch.Generator | None", int], Selection]


class FeatureSpaceHeuristic(Heuristic):
    """Embeds candidates and the labeled set in ``features``; the subclass's ``select`` picks among them (TypiClust,
    ProbCover, and through :class:`DistanceHeuristic` core-set and MedAL).

    Args:
        features: the space distances are measured in (default: task features only; name a VAE checkpoint
            for the paper's ``[T_f(u), alpha * V(u)]``, eq. 6).
        chunk_size: rows per block of candidate-to-labeled distances; memory ``4 * chunk_size**2`` bytes.
    """

    uses_labeled = True

    def __init__(self, features: FeatureSpace | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.features = features if features is not None else FeatureSpace()
        self.chunk_size = chunk_size

    def setup(self, data: ImageData, device: torch.device) -> None:
        self.features.setup(data, device)

    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        return self.features.embed(model, images)


class DistanceHeuristic(FeatureSpaceHeuristic):
    """A :class:`FeatureSpaceHeuristic` whose pick is the subclass's ``greedy`` function on the combined features
    (core-set, MedAL). Takes ``features`` and ``chunk_size``."""

    @staticmethod
    @abstractmethod
    def greedy(
        candidates: Tensor, labeled: Tensor, budget: int, generator: torch.Generator | None, chunk_size: int
    ) -> Selection:
        """The subclass's pick (a :data:`GreedyPick`): ``budget`` positions into ``candidates`` ``[n, D]``, given
        the labeled points ``[m, D]``."""

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        points, labeled_points = self.features.combine(candidates, labeled)
        return type(self).greedy(points, labeled_points, budget, generator, self.chunk_size)
