"""MedAL (paper, eq. 2): greedily pick the candidate with the largest mean distance to the labeled set."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alvae_pl.acquisition.distance_heuristic import DistanceHeuristic
from alvae_pl.acquisition.feature_space import (
    DEFAULT_CHUNK_SIZE,
    prepare_points,
    seeded_first_pick,
    squared_distance_blocks,
    squared_distances_to,
)
from alvae_pl.acquisition.heuristic import Selection

if TYPE_CHECKING:
    pass


def greedy_mean_distance(
    candidates: Tensor,
    labeled: Tensor,
    budget: int,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Selection:
    """Eq. 2, ``budget`` times: ``u* = argmax_u (1/|L|) sum_l ||u - l||``, each pick joining ``L``.

    ``|L|`` is the same for every candidate, so the argmax is taken on each candidate's running sum of
    distances, which a pick extends by the distance to the new point: one pass over the candidates per pick,
    never a recomputation over the whole labeled set. The sums are kept in float64 so that thousands of
    float32 terms do not drown the differences between candidates. Memory: the candidates, one centred copy,
    and ``chunk_size**2`` floats for the initial sums; never an ``n x m`` matrix. Runs on the candidates' device.

    Args:
        candidates: float ``[n, D]``.
        labeled: float ``[m, D]``; with ``m = 0`` the first pick is drawn uniformly with ``generator``.
        budget: how many to pick, ``1 <= budget <= n``.
        generator: CPU generator for the first pick of an empty labeled set (default: torch's global one).
        chunk_size: rows per block of the initial candidate-to-labeled distances.

    Returns:
        CPU ``Selection``: positions int64 ``[budget]`` into ``candidates`` in picking order (ties: lowest
        position); scores float32 ``[budget]``, each pick's mean distance to the labeled set at pick time
        (``inf`` for a first pick made with no labeled point).
    """
    x, y, x_sq, y_sq = prepare_points(candidates, labeled, budget)
    n, m = len(x), len(y)
    sums = torch.zeros(n, dtype=torch.float64, device=x.device)
    for x_rows, _, block in squared_distance_blocks(x, x_sq, y, y_sq, chunk_size):
        sums[x_rows] += block.sqrt_().sum(dim=1, dtype=torch.float64)

    positions = torch.empty(budget, dtype=torch.int64, device=x.device)
    scores = torch.empty(budget, dtype=torch.float64, device=x.device)
    for i in range(budget):
        if i == 0 and m == 0:
            pick = seeded_first_pick(n, x.device, generator)
            scores[i] = float("inf")
        else:
            pick = torch.argmax(sums)
            scores[i] = sums.index_select(0, pick.view(1)).squeeze(0) / (m + i)
        positions[i] = pick
        center, center_sq = x.index_select(0, pick.view(1)).squeeze(0), x_sq.index_select(0, pick.view(1)).squeeze(0)
        sums.add_(squared_distances_to(x, x_sq, center, center_sq).sqrt_())
        # -inf stays -inf under the additions that follow, so a pick is never chosen again.
        sums.index_fill_(0, pick.view(1), float("-inf"))
    return Selection(positions.cpu(), scores.to(torch.float32).cpu())


class MedAL(DistanceHeuristic):
    """MedAL selection (Smailagic et al., 2018): eq. 2 in the task features, optionally with VAE features (eq. 6).

    Takes ``features`` and ``chunk_size``, see :class:`DistanceHeuristic`.
    """

    greedy = staticmethod(greedy_mean_distance)
