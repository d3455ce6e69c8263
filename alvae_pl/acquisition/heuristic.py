"""The interface every acquisition heuristic implements (step 6 of Algorithm 1)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from alvae_pl.data.image_data import ImageData
    from alvae_pl.data.label_pool import LabelPool
    from alvae_pl.models.task_model import TaskModel


class Selection(NamedTuple):
    """What a heuristic picked.

    Attributes:
        positions: int64 ``[b]`` positions into the candidate rows it was given, in picking order.
        scores: float ``[b]`` the heuristic's score of each pick (distance, entropy, predicted loss...).
    """

    positions: Tensor
    scores: Tensor


class Heuristic(ABC):
    """Chooses which unlabeled pool images to label next.

    The active-learning loop drives a heuristic in these steps, once per round:

    0. ``start_acquisition(generator)``: draw whatever ``embed`` needs at random (BALD's dropout masks);
    1. ``candidates(unlabeled, generator, pool)``: the pool indices worth embedding (default: all unlabeled);
    2. ``embed(model, images)``: per-image outputs, run in batches over the candidates (and, when
       ``uses_labeled``, over the labeled set too), sharded over DDP ranks and gathered;
    3. ``select(candidates, labeled, budget, generator)``: on one process, the picks.

    All randomness comes from ``generator``, seeded by the loop from (seed, round), so a resumed run picks
    the same images. Steps 0 and 1 run on every DDP rank with generators in the same state, so every rank draws
    the same numbers.
    """

    #: Whether ``select`` needs the labeled set's outputs (distance-based heuristics do).
    uses_labeled: bool = False
    #: Whether ``embed`` needs the task model at all (random sampling does not).
    uses_model: bool = True
    #: The precision floating-point outputs of ``embed`` are gathered and handed to ``select`` in (the distance
    #: heuristics and BADGE take ``feature_dtype: float16`` or ``bfloat16`` to halve their memory).
    feature_dtype: torch.dtype = torch.float32

    def setup(self, data: ImageData, device: torch.device) -> None:  # noqa: B027 - optional hook
        """Called once before the first acquisition: load auxiliary models, check they fit the data."""

    def check_model(self, model: TaskModel) -> None:  # noqa: B027 - optional hook
        """Called before training: raise a one-line ``ValueError`` if ``model`` lacks what ``embed`` needs."""

    def start_acquisition(self, generator: torch.Generator) -> None:  # noqa: B027 - optional hook
        """Called on every rank at the start of each acquisition, before ``candidates``."""

    def candidates(self, unlabeled: Tensor, generator: torch.Generator, pool: LabelPool | None = None) -> Tensor:
        """Pool indices (int64 ``[n]``) to embed and choose from; a subset of ``unlabeled``.

        ``pool`` is the label pool the indices belong to (its labeled set, its rows in the data), which the loop
        passes for restrictions around the labeled set (:class:`~alvae_pl.acquisition.NearestCandidates`).
        """
        return unlabeled

    @abstractmethod
    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        """Per-image outputs for a batch.

        Args:
            model: the task model, in eval mode, under ``torch.no_grad``.
            images: uint8 ``[B, C, H, W]`` on the model's device.

        Returns:
            name -> float tensor ``[B, ...]``.
        """

    @abstractmethod
    def select(
        self,
        candidates: dict[str, Tensor],
        labeled: dict[str, Tensor],
        budget: int,
        generator: torch.Generator,
    ) -> Selection:
        """Pick ``budget`` distinct candidate rows.

        Args:
            candidates: outputs of ``embed`` for the candidates, each ``[n, ...]``, in candidate order, plus
                ``"index"``: their pool positions, int64 ``[n]``.
            labeled: the same for the labeled set, each ``[m, ...]`` (only ``"index"`` unless ``uses_labeled``),
                plus ``"target"``: their labels as the oracle gave them, int64 ``[m]`` or ``[m, K]``.
            budget: how many to pick, ``1 <= budget <= n``.
            generator: CPU generator for any random choice.
        """


def top_scoring(scores: Tensor, budget: int) -> Selection:
    """The ``budget`` highest of ``scores`` ``[n]``, highest first; ties go to the lowest position."""
    # A stable sort of the negated scores keeps tied positions in index order.
    positions = torch.sort(-scores, stable=True).indices[:budget]
    return Selection(positions, scores[positions])
