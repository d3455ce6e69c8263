"""Core-set (paper, eq. 1): greedily pick the candidate farthest from its nearest labeled point (k-center greedy)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from alvae_pl.acquisition.distance_heuristic import DistanceHeuristic
from alvae_pl.acquisition.distances import DEFAULT_CHUNK_SIZE, as_float32, prepare_points, seeded_first_pick
from alvae_pl.acquisition.greedy_loop import GreedyScore, greedy_picks
from alvae_pl.acquisition.heuristic import Selection

#: How :func:`k_center_greedy` updates the nearest-center distances; see :func:`choose_algorithm`.
Algorithm = Literal["auto", "lazy", "dense"]
ALGORITHMS: tuple[Algorithm, ...] = ("auto", "lazy", "dense")

#: Candidates re-measured in the first round of a pick; each further round of the same pick doubles it.
REFRESH_BATCH = 64

#: A pick's squared distance from then on: below every real distance, so that neither the pick nor a candidate that
#: duplicates a center (distance 0) is chosen before the others.
PICKED = -1.0


def nearest_center_score(device: torch.device) -> GreedyScore:
    """The dense k-center's :class:`~alvae_pl.acquisition.greedy_loop.GreedyScore`: each candidate's squared
    distance to its nearest center, which a new center lowers; picks sit at :data:`PICKED`."""
    zero = torch.zeros((), device=device)

    def fold(nearest: Tensor, squared: Tensor) -> None:
        # nearest = min(nearest, max(squared, 0)) in one kernel: after the pass over the candidates, the rest of a
        # pick is kept to as few kernels as possible. Picks, at -1 below the clamp's lower bound, stay at -1.
        torch.clamp(squared, min=zero, max=nearest, out=nearest)

    return GreedyScore(fold, excluded=PICKED)


def choose_algorithm(algorithm: str, device: torch.device) -> Literal["lazy", "dense"]:
    """The algorithm :func:`k_center_greedy` runs for ``algorithm`` on points on ``device``.

    ``"lazy"`` measures few distances per pick but reads values on the host several times a pick, which costs
    nothing on the CPU and a wait for the device each time on a GPU; ``"dense"`` measures every candidate
    against every new center but never waits. So ``"auto"`` is lazy on the CPU and dense on any other device.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return "lazy" if algorithm == "lazy" or (algorithm == "auto" and device.type == "cpu") else "dense"


def k_center_greedy(
    candidates: Tensor,
    labeled: Tensor,
    budget: int,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    algorithm: Algorithm = "auto",
) -> Selection:
    """Eq. 1, ``budget`` times: ``u* = argmax_u min_l ||u - l||``, each pick joining the labeled set.

    Two exact algorithms, which pick the same candidates up to float32 rounding (see ``algorithm`` and Ties):

    - ``"lazy"``: each candidate keeps an upper bound on its squared distance to the nearest center (labeled
      point or earlier pick), exact once it has been measured against every center. A new center can only lower
      distances, so stale bounds stay upper bounds. To pick, the candidate with the largest bound is taken if its
      bound is exact; otherwise the candidates with the largest bounds are measured against the centers they have
      not seen, and the search repeats. A candidate is measured against a center at most once (twice, with the
      grouping of ``_measure_new_centers``), so the distance work stays within twice the dense algorithm's;
      usually only a few dozen candidates are re-measured per pick. Each pick reads a few values on the host.
    - ``"dense"``: every candidate keeps its exact squared distance to the nearest center; a pick takes the
      argmax and lowers all distances with one matrix-vector pass against the new center. The picks stay on the
      device until the end, so a GPU never waits for the host (a first pick with no labeled point is drawn on
      the CPU, once).

    Ties: the lowest position wins among candidates whose *computed* float32 squared distances are equal. The
    points are centred on their mean first (see ``prepare_points``), so candidates at exactly equal distances
    (say on an integer grid) can compute a few float32 roundings apart; the larger computed value then wins,
    whatever its position. Every pick is still a farthest candidate up to float32 rounding, and ties that
    survive rounding exactly (e.g. coordinates that stay exact after centring) go to the lowest position. The
    two algorithms sum the same products in different orders, so such a tie, or a near-tie within rounding, can
    go differently in each, and the picks part from there on: on 300,000 x 544 clustered features with 3,000
    labeled this happened at pick 2,319 of 3,000, between candidates 6e-7 apart (relative, in float64).

    Memory: the candidates, one centred copy, the ``m + budget`` centers (lazy) and ``chunk_size**2`` floats of
    distances; never an ``n x n`` or ``n x m`` matrix. Runs on the candidates' device. Distances are float32; float16
    or bfloat16 candidates are kept so (the centred copy and the centers too) and upcast a chunk at a time, which
    halves the memory.

    Args:
        candidates: float ``[n, D]``: float32 (other precisions but float16 and bfloat16 are converted to it),
            float16 or bfloat16.
        labeled: float ``[m, D]``; with ``m = 0`` the first pick is drawn uniformly with ``generator``.
        budget: how many to pick, ``1 <= budget <= n``.
        generator: CPU generator for the first pick of an empty labeled set (default: torch's global one).
        chunk_size: rows and columns per block of distances.
        algorithm: ``"lazy"``, ``"dense"``, or ``"auto"`` for lazy on the CPU and dense on a GPU
            (:func:`choose_algorithm`).

    Returns:
        CPU ``Selection``: positions int64 ``[budget]`` into ``candidates`` in picking order; scores float32
        ``[budget]``, each pick's distance to its nearest center at pick time (``inf`` for a first pick made with
        no labeled point).
    """
    chosen = choose_algorithm(algorithm, candidates.device)
    # The dense algorithm's pass over all candidates reads them faster column by column; the lazy one gathers rows.
    x, y, x_sq, y_sq = prepare_points(candidates, labeled, budget, column_major=chosen == "dense")
    greedy = _lazy_k_center if chosen == "lazy" else _dense_k_center
    positions, squared_scores = greedy(x, x_sq, y, y_sq, budget, generator, chunk_size)
    return Selection(positions.cpu(), squared_scores.sqrt().cpu())


def _lazy_k_center(
    x: Tensor,
    x_sq: Tensor,
    y: Tensor,
    y_sq: Tensor,
    budget: int,
    generator: torch.Generator | None,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """The lazy algorithm of :func:`k_center_greedy` on centred points ``x`` ``[n, D]`` and ``y`` ``[m, D]``.

    Returns:
        CPU ``(positions int64 [budget], squared distances float32 [budget])``.
    """
    n, m = len(x), len(y)
    bound = _nearest_squared_distances(x, x_sq, None, y, y_sq, chunk_size)
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
        bound[pick] = PICKED
    return positions, scores


def _dense_k_center(
    x: Tensor,
    x_sq: Tensor,
    y: Tensor,
    y_sq: Tensor,
    budget: int,
    generator: torch.Generator | None,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """The dense algorithm of :func:`k_center_greedy` on centred points ``x`` ``[n, D]`` and ``y`` ``[m, D]``: the
    nearest labeled point's squared distance, then :func:`~alvae_pl.acquisition.greedy_loop.greedy_picks` (which reads
    no value on the host; a first pick with no labeled point is drawn on the CPU and sent over).

    Returns:
        ``(positions int64 [budget], squared distances float32 [budget])`` on ``x``'s device.
    """
    # The same chunked pass as the lazy algorithm's initial bounds.
    nearest = _nearest_squared_distances(x, x_sq, None, y, y_sq, chunk_size)
    first_pick = seeded_first_pick(len(x), x.device, generator) if len(y) == 0 else None
    return greedy_picks(nearest, x, x_sq, budget, nearest_center_score(x.device), first_pick)


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
    x: Tensor, x_sq: Tensor, rows: Tensor | None, centers: Tensor, centers_sq: Tensor, chunk_size: int
) -> Tensor:
    """Squared distance ``[r]`` from each ``x[rows]`` to its nearest center (``inf`` without centers), clamped at 0.

    Args:
        x: float ``[n, D]`` with squared norms ``x_sq`` ``[n]``.
        rows: int64 ``[r]`` positions into ``x``; ``None`` for all ``r = n`` rows, read in place.
        centers: float ``[c, D]`` with squared norms ``centers_sq`` ``[c]``.
        chunk_size: rows and centers per block of ``chunk_size**2`` distances.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    count = len(x) if rows is None else len(rows)
    nearest = torch.full((count,), float("inf"), device=x.device)
    for start in range(0, count, chunk_size):
        if rows is None:
            points, points_sq = as_float32(x[start : start + chunk_size]), x_sq[start : start + chunk_size]
        else:
            chunk = rows[start : start + chunk_size]
            points, points_sq = as_float32(x.index_select(0, chunk)), x_sq.index_select(0, chunk)
        part = nearest[start : start + len(points)]
        for center_start in range(0, len(centers), chunk_size):
            block_centers = slice(center_start, center_start + chunk_size)
            # ||c||^2 - 2 p.c for each point p and center c: ||p||^2 is the same along a row, so it is added once
            # after the minimum, which saves two passes over each block (on a GPU, two kernel launches).
            block = torch.addmm(centers_sq[None, block_centers], points, as_float32(centers[block_centers]).T, alpha=-2)
            torch.minimum(part, block.amin(dim=1), out=part)
        part.add_(points_sq).clamp_min_(0)
    return nearest


class CoreSet(DistanceHeuristic):
    """Core-set selection (Sener & Savarese, 2018): eq. 1 in the task features, optionally with VAE features (eq. 6).

    Takes ``features`` and ``chunk_size``, see :class:`DistanceHeuristic`. The k-center algorithm follows the
    features' device (:func:`choose_algorithm`).
    """

    greedy = staticmethod(k_center_greedy)

    @staticmethod
    def sharded_greedy(*args: Any, **kwargs: Any) -> Selection:
        # Imported here: the distributed module builds on this one.
        from alvae_pl.acquisition.distributed_selection import distributed_k_center_greedy

        return distributed_k_center_greedy(*args, **kwargs)
