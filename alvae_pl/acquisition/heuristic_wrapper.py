"""The base of heuristics that wrap another one (``ClassBalanced``, ``NearestCandidates``): the hooks they pass on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from alvae_pl.acquisition.heuristic import Heuristic

if TYPE_CHECKING:
    from alvae_pl.data.image_data import ImageData
    from alvae_pl.models.task_model import TaskModel


class HeuristicWrapper(Heuristic):
    """A heuristic around ``heuristic``: ``setup``, ``check_model`` and ``start_acquisition`` reach the wrapped one,
    and the loop embeds the labeled set only if the wrapped one reads it (``uses_labeled``). A wrapper changes the
    rest (which candidates, what is embedded, how the budget is picked)."""

    def __init__(self, heuristic: Heuristic) -> None:
        self.heuristic = heuristic
        self.uses_labeled = heuristic.uses_labeled

    def setup(self, data: ImageData, device: torch.device) -> None:
        self.heuristic.setup(data, device)

    def check_model(self, model: TaskModel) -> None:
        self.heuristic.check_model(model)

    def start_acquisition(self, generator: torch.Generator) -> None:
        self.heuristic.start_acquisition(generator)
