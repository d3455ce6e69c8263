"""The covering radius of a labeled set: how far the worst-covered pool image lies from its nearest labeled one."""

from __future__ import annotations

from torch import Tensor

from alvae_pl.acquisition.nearest_candidates import Search, nearest_neighbours


def covering_radius(points: Tensor, centers: Tensor, search: Search = "auto") -> float:
    """``max_u min_l ||u - l||``: the radius of the balls around ``centers`` that cover every one of ``points``.

    Core-set's objective (Sener & Savarese, 2018; the paper's eq. 1 picks greedily to lower it): of two labeled sets
    of one size, the one with the smaller radius covers the pool better in this feature space. The nearest center
    of each point is found exactly, in blocks (:func:`~alvae_pl.acquisition.nearest_candidates.nearest_neighbours`).

    Args:
        points: float ``[n, D]``, the pool (labeled images included: they are at distance 0).
        centers: float ``[m, D]``, ``m >= 1``, the labeled images.
        search: ``"auto"``, ``"faiss"`` or ``"sklearn"``.
    """
    if len(centers) == 0:
        raise ValueError("the covering radius needs at least one center (a labeled image)")
    if len(points) == 0:
        return 0.0
    points, centers = points.float().cpu(), centers.float().cpu()
    nearest = nearest_neighbours(points, centers, 1, search)[:, 0]
    # Measured again in float64 from the coordinates: the search's own distances come from ||u||^2 + ||l||^2 - 2 u.l.
    return float((points.double() - centers[nearest].double()).norm(dim=1).max())
