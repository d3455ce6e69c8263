"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022): the most typical image of each of the largest clusters that no
labeled image represents yet."""

from __future__ import annotations

import heapq

import numpy as np
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans
from torch import Tensor

from alvae_pl.acquisition.distance_heuristic import FeatureSpaceHeuristic
from alvae_pl.acquisition.distances import DEFAULT_CHUNK_SIZE
from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.acquisition.heuristic import Selection

#: The paper's K of typicality: the mean distance to the 20 nearest neighbours.
DEFAULT_NEIGHBOURS = 20
#: The reference code's cap on the number of clusters (its budgets reach 6,000 labels; k-means with thousands of
#: clusters on a large pool costs minutes and leaves clusters of a few images, whose "typicality" means little).
DEFAULT_MAX_CLUSTERS = 500
#: Clusters of at most this many images come last (the reference code drops them: they are outliers, not modes).
DEFAULT_MIN_CLUSTER_SIZE = 5
#: Above this many clusters, mini-batch k-means (the reference code's threshold): full k-means costs
#: ``N x clusters x D`` per iteration, minutes at 300,000 x 500 x 544.
DEFAULT_MINIBATCH_ABOVE = 50


def combine_points(candidates: Tensor, labeled: Tensor, budget: int) -> Tensor:
    """Checks a selection's inputs and returns float32 ``[m + n, D]``: the labeled rows first, then the candidates.

    Args:
        candidates: float ``[n, D]``.
        labeled: float ``[m, D]``, ``m >= 0``, on any device (moved to the candidates' one).
        budget: how many candidates will be picked, ``1 <= budget <= n``.
    """
    if candidates.ndim != 2 or labeled.ndim != 2:
        raise ValueError(f"points must be [n, D] and [m, D], got {list(candidates.shape)} and {list(labeled.shape)}")
    if candidates.shape[1] != labeled.shape[1] and len(labeled):
        raise ValueError(f"candidates are {candidates.shape[1]}-d but the labeled points {labeled.shape[1]}-d")
    if not 1 <= budget <= len(candidates):
        raise ValueError(f"budget must be between 1 and the number of candidates ({len(candidates)}), got {budget}")
    labeled = labeled.to(candidates.device, torch.float32).reshape(len(labeled), candidates.shape[1])
    points = torch.cat([labeled, candidates.to(torch.float32)])
    if not torch.isfinite(points).all():
        raise ValueError("features contain NaN or inf; check the task model (diverged training?) or the VAE")
    return points


def feature_points(
    features: FeatureSpace, candidates: dict[str, Tensor], labeled: dict[str, Tensor]
) -> tuple[Tensor, Tensor]:
    """``features.combine`` of ``select``'s outputs, an empty labeled set (a cold start) given either as ``{}`` or as
    outputs with no row (the loop's ``{"index": int64 [0]}``, with nothing embedded)."""
    if not any(len(value) for value in labeled.values()):
        labeled = {}
    return features.combine(candidates, labeled)


def typicality(points: Tensor, neighbours: int = DEFAULT_NEIGHBOURS, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """The paper's typicality: ``1 / mean distance to the k nearest other points``, ``k = min(neighbours, N - 1)``.

    A point's duplicates count as neighbours at distance 0, so ``k`` duplicates give ``inf`` (a point alone: ``inf``
    too). Distances are float32 on centred points (see ``prepare_points`` for why centring), blocks of
    ``chunk_size x chunk_size``; every point keeps a running list of its ``k`` nearest, so memory is
    ``O(N k + chunk_size**2)``, never ``N x N``. Runs on the points' device.

    Args:
        points: float ``[N, D]``.
        neighbours: ``k`` before clipping, ``>= 1``.
        chunk_size: rows and columns per block of distances.

    Returns:
        float64 ``[N]`` on the CPU.
    """
    if neighbours < 1:
        raise ValueError(f"neighbours must be >= 1, got {neighbours}")
    n = len(points)
    k = min(neighbours, n - 1)
    if k == 0:
        return torch.full((n,), float("inf"), dtype=torch.float64)
    x = points.float() - points.float().mean(0)
    x_sq = (x * x).sum(1)
    nearest = x.new_full((n, k), float("inf"))
    # Blocks on and above the diagonal only: each serves its rows and, transposed, its columns, which halves the
    # distance work (and a pair's distance is the same number seen from either end).
    for start in range(0, n, chunk_size):
        rows = slice(start, min(start + chunk_size, n))
        for column_start in range(start, n, chunk_size):
            columns = slice(column_start, min(column_start + chunk_size, n))
            block = torch.addmm(x_sq[rows, None], x[rows], x[columns].T, alpha=-2).add_(x_sq[None, columns])
            block.clamp_min_(0)
            if column_start == start:
                block.fill_diagonal_(float("inf"))  # a point is not its own neighbour
            else:
                nearest[columns] = _smallest(nearest[columns], block.T, k)
            nearest[rows] = _smallest(nearest[rows], block, k)
    # Summed in sorted order in float64: points with the same neighbour distances (duplicates) tie exactly.
    mean = nearest.sqrt_().double().sum(1).cpu() / k
    return 1.0 / mean


def _smallest(best: Tensor, block: Tensor, k: int) -> Tensor:
    """The ``k`` smallest of each row of ``best`` ``[r, k]`` and ``block`` ``[r, c]`` together, ascending."""
    return torch.topk(torch.cat([best, block], dim=1), k, dim=1, largest=False, sorted=True).values


def cluster_labels(points: Tensor, clusters: int, seed: int, minibatch_above: int = DEFAULT_MINIBATCH_ABOVE) -> Tensor:
    """k-means cluster of each point, int64 ``[N]``: scikit-learn's ``KMeans`` (k-means++, one init), or
    ``MiniBatchKMeans`` above ``minibatch_above`` clusters, seeded with ``seed``; on the CPU, in float32."""
    data = points.detach().to("cpu", torch.float32).numpy()
    if clusters <= minibatch_above:
        model = KMeans(n_clusters=clusters, n_init=1, random_state=seed)
    else:
        model = MiniBatchKMeans(n_clusters=clusters, n_init=1, batch_size=4096, random_state=seed)
    return torch.from_numpy(model.fit_predict(data).astype(np.int64))


def typical_cluster_picks(
    clusters: Tensor,
    typicality: Tensor,
    labeled: int,
    budget: int,
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE,
) -> Selection:
    """The most typical candidate of each cluster, clusters taken in TypiClust's order.

    Each pick goes to the cluster, among those with a candidate left, that comes first by: too small (at most
    ``min_cluster_size`` points) last; then fewest labeled points, counting this selection's earlier picks; then
    the most points; then the lowest cluster id. So the largest clusters without a labeled image come first, one
    pick each, then clusters by fewest labels and largest size; a cluster gets a second pick only once every
    cluster has as many labels as it (the budget can exceed the capped number of clusters). Within a cluster, the
    most typical candidate not yet picked; ties go to the lowest position.

    Args:
        clusters: int64 ``[m + n]``, the labeled points' clusters first.
        typicality: float ``[m + n]``, in the same order.
        labeled: ``m``.
        budget: how many candidates to pick, ``<= n``.
        min_cluster_size: clusters of at most this many points (labeled and candidates) are taken last.

    Returns:
        CPU ``Selection``: positions int64 ``[budget]`` into the candidates, scored by their typicality (float32).
    """
    clusters_np = clusters.cpu().numpy()
    typicality_np = typicality.cpu().numpy()
    sizes = np.bincount(clusters_np)
    counts = np.bincount(clusters_np[:labeled], minlength=len(sizes))
    candidate_clusters = clusters_np[labeled:]
    positions = np.arange(len(candidate_clusters))
    # Grouped by cluster, most typical first, then lowest position.
    order = np.lexsort((positions, -typicality_np[labeled:], candidate_clusters))
    starts = np.searchsorted(candidate_clusters[order], np.arange(len(sizes)))
    ends = np.append(starts[1:], len(order))
    queue = [
        (bool(sizes[c] <= min_cluster_size), int(counts[c]), -int(sizes[c]), c) for c in np.flatnonzero(ends > starts)
    ]
    heapq.heapify(queue)
    picks = []
    for _ in range(budget):
        too_small, count, negative_size, cluster = heapq.heappop(queue)
        picks.append(order[starts[cluster]])
        starts[cluster] += 1
        if starts[cluster] < ends[cluster]:
            heapq.heappush(queue, (too_small, count + 1, negative_size, cluster))
    chosen = torch.as_tensor(np.array(picks, dtype=np.int64))
    return Selection(chosen, torch.as_tensor(typicality_np[labeled:][chosen.numpy()], dtype=torch.float32))


def typiclust(
    candidates: Tensor,
    labeled: Tensor,
    budget: int,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_clusters: int = DEFAULT_MAX_CLUSTERS,
    neighbours: int = DEFAULT_NEIGHBOURS,
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE,
    minibatch_above: int = DEFAULT_MINIBATCH_ABOVE,
) -> Selection:
    """TypiClust on candidates ``[n, D]`` and labeled points ``[m, D]`` (``m = 0``: a cold start).

    All ``m + n`` points (labeled first) are clustered by k-means into ``min(m + budget, max_clusters, m + n)``
    clusters, seeded with one number drawn from ``generator``; each point's typicality is measured against all
    ``m + n`` points (:func:`typicality`), and :func:`typical_cluster_picks` picks. Memory: the points, ``N x k``
    neighbour distances and one block of distances, plus what k-means needs; never ``N x N``.

    (The reference code measures typicality within each cluster's unlabeled points, with ``k`` clipped to half the
    cluster; here it is the paper's density over the whole set, one chunked pass, so it does not change as picks
    are made.)
    """
    if max_clusters < 1:
        raise ValueError(f"max_clusters must be >= 1, got {max_clusters}")
    points = combine_points(candidates, labeled, budget)
    m = len(labeled)
    seed = int(torch.randint(2**31 - 1, (), generator=generator))
    clusters = cluster_labels(points, min(m + budget, max_clusters, len(points)), seed, minibatch_above)
    scores = typicality(points, neighbours, chunk_size)
    return typical_cluster_picks(clusters, scores, m, budget, min_cluster_size)


class TypiClust(FeatureSpaceHeuristic):
    """TypiClust (Hacohen, Dekel & Weinshall, *Active learning on a budget*, ICML 2022), see :func:`typiclust`.

    Measures in ``features`` (the same feature space as core-set: task features, with ``vae`` the paper's eq. 6,
    with ``task_weight: 0`` the task-agnostic features alone). Scores in ``labeled.csv``: each pick's typicality.

    Args:
        features: the feature space (default: the task model's features).
        chunk_size: rows and columns per block of distances.
        max_clusters: cap on the number of k-means clusters (``|L| + budget`` otherwise).
        neighbours: ``k`` of typicality.
        min_cluster_size: clusters of at most this many images are taken last.
        minibatch_above: above this many clusters, mini-batch k-means.
    """

    def __init__(
        self,
        features: FeatureSpace | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_clusters: int = DEFAULT_MAX_CLUSTERS,
        neighbours: int = DEFAULT_NEIGHBOURS,
        min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE,
        minibatch_above: int = DEFAULT_MINIBATCH_ABOVE,
    ) -> None:
        super().__init__(features, chunk_size)
        if max_clusters < 1 or neighbours < 1:
            raise ValueError(f"max_clusters and neighbours must be >= 1, got {max_clusters} and {neighbours}")
        self.max_clusters = max_clusters
        self.neighbours = neighbours
        self.min_cluster_size = min_cluster_size
        self.minibatch_above = minibatch_above

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        points, labeled_points = feature_points(self.features, candidates, labeled)
        return typiclust(
            points,
            labeled_points,
            budget,
            generator,
            self.chunk_size,
            self.max_clusters,
            self.neighbours,
            self.min_cluster_size,
            self.minibatch_above,
        )
