"""MedAL (paper, eq. 2): greedily pick the candidate with the largest mean distance to the labeled set."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from alvae_pl.acquisition.distance_heuristic import DistanceHeuristic
from alvae_pl.acquisition.distances import (
    DEFAULT_CHUNK_SIZE,
    prepare_points,
    seeded_first_pick,
    squared_distance_blocks,
)
from alvae_pl.acquisition.greedy_loop import GreedyScore, greedy_picks
from alvae_pl.acquisition.heuristic import Selection


def _add_distances(sums: Tensor, squared: Tensor) -> None:
    # Clamped first: rounding can take a computed squared distance a little below 0, whose sqrt would be NaN.
    sums.add_(squared.clamp_min_(0).sqrt_())


#: MedAL's :class:`~alvae_pl.acquisition.greedy_loop.GreedyScore`: each candidate's sum of distances (float64) to
#: the labeled set, which a new center extends; picks sit at ``-inf``, which the additions that follow leave there.
DISTANCE_SUM = GreedyScore(_add_distances, excluded=float("-inf"))


def add_distance_sums(sums: Tensor, x: Tensor, x_sq: Tensor, y: Tensor, y_sq: Tensor, chunk_size: int) -> None:
    """Adds to ``sums`` (float64 ``[n]``) each row of ``x`` ``[n, D]``'s summed distances to the rows of ``y``
    ``[m, D]`` (squared norms ``x_sq`` ``[n]``, ``y_sq`` ``[m]``), ``chunk_size**2`` distances at a time."""
    for x_rows, _, block in squared_distance_blocks(x, x_sq, y, y_sq, chunk_size):
        sums[x_rows].add_(block.sqrt_().sum(dim=1, dtype=torch.float64))


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
    """:func:`greedy_mean_distance` on centred points ``x`` ``[n, D]`` and ``y`` ``[m, D]``: the sums of distances
    to the labeled set, then :func:`~alvae_pl.acquisition.greedy_loop.greedy_picks` (which reads no value on the host;
    a first pick with no labeled point is drawn on the CPU and sent over).

    Returns:
        ``(positions int64 [budget], mean distances float64 [budget])`` on ``x``'s device.
    """
    m = len(y)
    sums = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    add_distance_sums(sums, x, x_sq, y, y_sq, chunk_size)
    first_pick = seeded_first_pick(len(x), x.device, generator) if m == 0 else None
    positions, sums_at_pick = greedy_picks(sums, x, x_sq, budget, DISTANCE_SUM, first_pick)
    # Pick i was made with m + i points labeled (and a first pick with none, scored inf, stays inf).
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
