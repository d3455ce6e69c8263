"""Core-set (paper, eq. 1): greedily pick the candidate farthest from its nearest labeled point (k-center greedy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alvae_pl.acquisition.feature_space import (
    DEFAULT_CHUNK_SIZE,
    FeatureSpace,
    prepare_points,
    seeded_first_pick,
    squared_distance_blocks,
    squared_distances_to,
)
from alvae_pl.acquisition.heuristic import Heuristic, Selection

if TYPE_CHECKING:
    from alvae_pl.data.image_data import ImageData
    from alvae_pl.models.task_model import TaskModel


def k_center_greedy(
    candidates: Tensor,
    labeled: Tensor,
    budget: int,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Selection:
    """Eq. 1, ``budget`` times: ``u* = argmax_u min_l ||u - l||``, each pick joining the labeled set.

    Keeps each candidate's squared distance to its nearest center (labeled point or earlier pick) and lowers it
    with the distances to each new pick, so a pick costs one pass over the candidates. Memory: the candidates,
    one centred copy, and ``chunk_size**2`` floats for the initial distances to the labeled set; never an
    ``n x n`` or ``n x m`` matrix. Runs on the candidates' device, in float32.

    Args:
        candidates: float ``[n, D]``.
        labeled: float ``[m, D]``; with ``m = 0`` the first pick is drawn uniformly with ``generator``.
        budget: how many to pick, ``1 <= budget <= n``.
        generator: CPU generator for the first pick of an empty labeled set (default: torch's global one).
        chunk_size: rows per block of the initial candidate-to-labeled distances.

    Returns:
        CPU ``Selection``: positions int64 ``[budget]`` into ``candidates`` in picking order (ties: lowest
        position); scores float32 ``[budget]``, each pick's distance to its nearest center at pick time (``inf``
        for a first pick made with no labeled point).
    """
    x, y, x_sq, y_sq = prepare_points(candidates, labeled, budget)
    n = len(x)
    nearest = torch.full((n,), float("inf"), device=x.device)
    for start, stop, block in squared_distance_blocks(x, x_sq, y, y_sq, chunk_size):
        torch.minimum(nearest[start:stop], block.amin(dim=1), out=nearest[start:stop])

    positions = torch.empty(budget, dtype=torch.int64, device=x.device)
    scores = torch.empty(budget, device=x.device)
    for i in range(budget):
        pick = seeded_first_pick(n, x.device, generator) if i == 0 and len(y) == 0 else torch.argmax(nearest)
        # index_select rather than nearest[pick]: a tensor index would make a GPU wait for the host every pick.
        positions[i] = pick
        scores[i] = nearest.index_select(0, pick.view(1)).squeeze(0)
        torch.minimum(nearest, squared_distances_to(x, x_sq, pick), out=nearest)
        # Below every real distance, so neither this pick nor a duplicate's 0 is chosen before the others.
        nearest.index_fill_(0, pick.view(1), -1.0)
    return Selection(positions.cpu(), scores.sqrt().cpu())


class CoreSet(Heuristic):
    """Core-set selection (Sener & Savarese, 2018) in the task features, optionally with VAE features (eq. 6).

    Args:
        features: the space distances are measured in (default: task features only).
        chunk_size: rows per block of the candidate-to-labeled distances; memory ``4 * chunk_size**2`` bytes.
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

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        points, labeled_points = self.features.combine(candidates, labeled)
        return k_center_greedy(points, labeled_points, budget, generator, self.chunk_size)
