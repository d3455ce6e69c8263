"""MedAL (paper, eq. 2): greedily pick the candidate with the largest mean distance to the labeled set."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from alvae_pl.acquisition.distance_heuristic import DistanceHeuristic
from alvae_pl.acquisition.distances import (
    DEFAULT_CHUNK_SIZE,
    as_float32,
    prepare_points,
    seeded_first_pick,
    squared_distance_blocks,
    squared_distances_to,
)
from alvae_pl.acquisition.heuristic import Selection


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
    and ``chunk_size**2`` floats for the initial sums; never an ``n x m`` matrix (float16 or bfloat16 candidates are
    kept so, and upcast to float32 a chunk at a time: half the memory). Runs on the candidates' device;
    on a GPU the picks stay on the device until the end, so it never waits for the host (a first pick with no
    labeled point is drawn on the CPU, once).

    Ties: the lowest position wins among candidates whose computed sums are equal. Distances are computed in
    float32 after centring the points (see ``prepare_points``), so candidates at exactly equal mean distances can
    compute a rounding apart, and then the larger computed sum wins, whatever its position.

    Args:
        candidates: float ``[n, D]``.
        labeled: float ``[m, D]``; with ``m = 0`` the first pick is drawn uniformly with ``generator``.
        budget: how many to pick, ``1 <= budget <= n``.
        generator: CPU generator for the first pick of an empty labeled set (default: torch's global one).
        chunk_size: rows per block of the initial candidate-to-labeled distances.

    Returns:
        CPU ``Selection``: positions int64 ``[budget]`` into ``candidates`` in picking order; scores float32
        ``[budget]``, each pick's mean distance to the labeled set at pick time (``inf`` for a first pick made
        with no labeled point).
    """
    # Column by column: the pass over all candidates at every pick reads them faster so.
    x, y, x_sq, y_sq = prepare_points(candidates, labeled, budget, column_major=True)
    positions, scores = _greedy_mean_distance_on_device(x, x_sq, y, y_sq, budget, generator, chunk_size)
    return Selection(positions.cpu(), scores.to(torch.float32).cpu())


def _greedy_mean_distance_on_device(
    x: Tensor,
    x_sq: Tensor,
    y: Tensor,
    y_sq: Tensor,
    budget: int,
    generator: torch.Generator | None,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """The loop of :func:`greedy_mean_distance` on centred points ``x`` ``[n, D]`` and ``y`` ``[m, D]``.

    Reads no value on the host (a first pick with no labeled point is drawn on the CPU and sent over), so on a GPU
    all ``budget`` picks are queued without waiting for any of them.

    Returns:
        ``(positions int64 [budget], mean distances float64 [budget])`` on ``x``'s device.
    """
    n, m = len(x), len(y)
    sums = torch.zeros(n, dtype=torch.float64, device=x.device)
    for x_rows, _, block in squared_distance_blocks(x, x_sq, y, y_sq, chunk_size):
        sums[x_rows].add_(block.sqrt_().sum(dim=1, dtype=torch.float64))

    positions = torch.empty(budget, dtype=torch.int64, device=x.device)
    sums_at_pick = torch.empty(budget, dtype=torch.float64, device=x.device)
    distances = torch.empty_like(x_sq)
    for i in range(budget):
        # One-element views, written in place: the pick stays an index tensor on the device, never a Python int,
        # whose reading would wait for the device.
        pick, score = positions[i : i + 1], sums_at_pick[i : i + 1]
        if i == 0 and m == 0:
            pick.copy_(seeded_first_pick(n, x.device, generator))
            score.fill_(float("inf"))  # and inf / 0 stays inf below
        else:
            torch.argmax(sums, dim=0, keepdim=True, out=pick)
            torch.index_select(sums, 0, pick, out=score)
        center, center_sq = as_float32(x.index_select(0, pick).squeeze(0)), x_sq.index_select(0, pick).squeeze(0)
        sums.add_(squared_distances_to(x, x_sq, center, center_sq, out=distances).sqrt_())
        # -inf stays -inf under the additions that follow, so a pick is never chosen again.
        sums.index_fill_(0, pick, float("-inf"))
    # Pick i was made with m + i points labeled.
    return positions, sums_at_pick / torch.arange(m, m + budget, device=x.device)


class MedAL(DistanceHeuristic):
    """MedAL selection (Smailagic et al., 2018): eq. 2 in the task features, optionally with VAE features (eq. 6).

    Takes ``features`` and ``chunk_size``, see :class:`DistanceHeuristic`.
    """

    greedy = staticmethod(greedy_mean_distance)

    @staticmethod
    def sharded_greedy(*args: Any, **kwargs: Any) -> Selection:
        # Imported here: the distributed module builds on this one.
        from alvae_pl.acquisition.distributed_selection import distributed_greedy_mean_distance

        return distributed_greedy_mean_distance(*args, **kwargs)
