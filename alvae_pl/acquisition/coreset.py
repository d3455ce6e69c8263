"""Core-set (paper, eq. 1): greedily pick the candidate farthest from its nearest labeled point (k-center greedy)."""

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
)
from alvae_pl.acquisition.heuristic import Selection

if TYPE_CHECKING:
    pass


#: Candidates re-measured in the first round of a pick; each further round of the same pick doubles it.
REFRESH_BATCH = 64


def k_center_greedy(
    candidates: Tensor,
    labeled: Tensor,
    budget: int,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Selection:
    """Eq. 1, ``budget`` times: ``u* = argmax_u min_l ||u - l||``, each pick joining the labeled set.

    Exact, with lazy updates: each candidate keeps an upper bound on its squared distance to the nearest center
    (labeled point or earlier pick), exact once it has been measured against every center. A new center can
    only lower distances, so stale bounds stay upper bounds. To pick, the candidate with the largest bound
    (lowest position among ties) is taken if its bound is exact; otherwise the candidates with the largest
    bounds are measured against the centers they have not seen, and the search repeats. A candidate is measured
    against a center at most once (twice, with the grouping of ``_measure_new_centers``), so the distance work
    stays within twice the eager update's (one pass over all candidates per pick); usually only a few dozen
    candidates are re-measured per pick. Memory: the
    candidates, one centred copy, the ``m + budget`` centers and ``chunk_size**2`` floats of distances; never an
    ``n x n`` or ``n x m`` matrix. Runs on the candidates' device, in float32.

    Args:
        candidates: float ``[n, D]``.
        labeled: float ``[m, D]``; with ``m = 0`` the first pick is drawn uniformly with ``generator``.
        budget: how many to pick, ``1 <= budget <= n``.
        generator: CPU generator for the first pick of an empty labeled set (default: torch's global one).
        chunk_size: rows and columns per block of distances.

    Returns:
        CPU ``Selection``: positions int64 ``[budget]`` into ``candidates`` in picking order (ties: lowest
        position); scores float32 ``[budget]``, each pick's distance to its nearest center at pick time (``inf``
        for a first pick made with no labeled point).
    """
    x, y, x_sq, y_sq = prepare_points(candidates, labeled, budget)
    n, m = len(x), len(y)
    everyone = torch.arange(n, device=x.device)
    bound = _nearest_squared_distances(x, x_sq, everyone, y, y_sq, chunk_size)
    # measured[u]: how many centers, from the first, bound[u] accounts for.
    measured = torch.full((n,), m, dtype=torch.int64, device=x.device)
    centers, centers_sq = torch.cat([y, x.new_empty(budget, x.shape[1])]), torch.cat([y_sq, x_sq.new_empty(budget)])

    positions = torch.empty(budget, dtype=torch.int64)
    scores = torch.empty(budget)
    for i in range(budget):
        k = m + i  # centers so far
        batch = REFRESH_BATCH
        while True:
            pick = int(seeded_first_pick(n, x.device, generator)) if k == 0 else int(torch.argmax(bound))
            if measured[pick] == k:
                break
            rows = torch.topk(bound, min(batch, n), sorted=False).indices
            rows = rows[measured[rows] < k]
            _measure_new_centers(x, x_sq, rows, centers[:k], centers_sq[:k], bound, measured, chunk_size)
            batch *= 2
        positions[i], scores[i] = pick, float(bound[pick])
        centers[k], centers_sq[k] = x[pick], x_sq[pick]
        # Below every real distance, so neither this pick nor a duplicate's 0 is chosen before the others.
        bound[pick] = -1.0
    return Selection(positions, scores.sqrt())


def _measure_new_centers(
    x: Tensor,
    x_sq: Tensor,
    rows: Tensor,
    centers: Tensor,
    centers_sq: Tensor,
    bound: Tensor,
    measured: Tensor,
    chunk_size: int,
) -> None:
    """Lowers ``bound[rows]`` with the distances to the centers each row has not been measured against yet.

    Rows are grouped by how many centers they lack, in powers of two, so that measuring a whole group against
    the longest such tail costs at most twice the work each row needs.
    """
    missing = len(centers) - measured.index_select(0, rows)
    group = torch.log2(missing.to(torch.float32)).floor_()
    for value in torch.unique(group).tolist():
        in_group = group == value
        group_rows = rows[in_group]
        first_missing = len(centers) - int(missing[in_group].max())
        new = _nearest_squared_distances(
            x, x_sq, group_rows, centers[first_missing:], centers_sq[first_missing:], chunk_size
        )
        bound.index_copy_(0, group_rows, torch.minimum(bound.index_select(0, group_rows), new))
    measured.index_fill_(0, rows, len(centers))


def _nearest_squared_distances(
    x: Tensor, x_sq: Tensor, rows: Tensor, centers: Tensor, centers_sq: Tensor, chunk_size: int
) -> Tensor:
    """Squared distance ``[len(rows)]`` from each ``x[rows]`` to its nearest center (``inf`` without centers).

    Args:
        x: float ``[n, D]`` with squared norms ``x_sq`` ``[n]``.
        rows: int64 ``[r]`` positions into ``x``.
        centers: float ``[c, D]`` with squared norms ``centers_sq`` ``[c]``.
    """
    nearest = torch.full((len(rows),), float("inf"), device=x.device)
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start : start + chunk_size]
        points, points_sq = x.index_select(0, chunk), x_sq.index_select(0, chunk)
        for x_rows, _, block in squared_distance_blocks(points, points_sq, centers, centers_sq, chunk_size):
            part = nearest[start + x_rows.start : start + x_rows.stop]
            torch.minimum(part, block.amin(dim=1), out=part)
    return nearest


class CoreSet(DistanceHeuristic):
    """Core-set selection (Sener & Savarese, 2018): eq. 1 in the task features, optionally with VAE features (eq. 6).

    Takes ``features`` and ``chunk_size``, see :class:`DistanceHeuristic`.
    """

    greedy = staticmethod(k_center_greedy)
