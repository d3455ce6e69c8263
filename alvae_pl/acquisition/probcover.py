"""ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022): greedy maximum coverage of the pool by balls of
radius delta around the labeled images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import sparse
from torch import Tensor

from alvae_pl.acquisition.distance_heuristic import FeatureSpaceHeuristic
from alvae_pl.acquisition.distances import DEFAULT_CHUNK_SIZE, squared_distance_blocks
from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.acquisition.heuristic import Selection
from alvae_pl.acquisition.typiclust import cluster_labels, combine_points, feature_points

if TYPE_CHECKING:
    from alvae_pl.data.image_data import ImageData

#: Radii tried when ``delta`` is not given: 0.05, 0.10, ..., 1.00. On L2-normalised points distances lie in
#: [0, 2] (in [0, sqrt 2] for ReLU features); the paper's chosen radii lie between 0.4 and 0.8.
DELTA_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 21))
#: The paper's purity threshold alpha: the largest radius whose balls are at least 95% pure.
DEFAULT_PURITY = 0.95
#: Clusters of the purity k-means when the number of classes is unknown (``select`` called without ``setup``).
DEFAULT_PURITY_CLUSTERS = 10
#: Directed edges (self-loops included) the ball graph may hold: 5 bytes each once built, about 20 at the peak while
#: building (measured: 1,021 MiB for 54.5 million edges), so about 2 GiB at this default.
DEFAULT_MAX_EDGES = 100_000_000


def normalize_rows(points: Tensor) -> Tensor:
    """float32 ``[N, D]`` rows scaled to unit L2 norm, as the reference code does (all-zero rows stay zero)."""
    return torch.nn.functional.normalize(points.float(), dim=1)


def purity_radii(
    points: Tensor,
    clusters: Tensor,
    grid: Sequence[float] = DELTA_GRID,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """For each radius of ``grid``: the fraction of pure balls and the number of directed edges of its ball graph.

    The ball ``B(x, delta)`` is pure when every point ``y`` with ``||x - y|| < delta`` shares ``x``'s cluster. So it
    is pure exactly when ``delta`` is at most the distance from ``x`` to the nearest point of another cluster: one
    chunked pass finds that distance for every point, and the purity of every radius follows. The same pass counts,
    per radius, the ordered pairs ``(x, y)`` (``x = y`` included) within it: the edges its ball graph would hold.
    Memory: ``N`` floats and one ``chunk_size x chunk_size`` block.

    Args:
        points: float ``[N, D]``.
        clusters: int64 ``[N]``.
        grid: radii, ascending.
        chunk_size: rows and columns per block of distances.

    Returns:
        ``(purity float64 [G], edges int64 [G])`` on the CPU.
    """
    x = points.float()
    x_sq = (x * x).sum(1)
    clusters = clusters.to(x.device)
    squared_grid = torch.tensor([delta**2 for delta in grid], device=x.device)
    nearest_other = torch.full((len(x),), float("inf"), device=x.device)
    pairs_below = torch.zeros(len(grid) + 1, dtype=torch.int64, device=x.device)
    for x_rows, y_rows, block in squared_distance_blocks(x, x_sq, x, x_sq, chunk_size):
        # bucket b holds the squared distances in [grid[b-1]**2, grid[b]**2): within radius grid[b] and above.
        pairs_below += torch.bincount(
            torch.bucketize(block.flatten(), squared_grid, right=True), minlength=len(grid) + 1
        )
        block.masked_fill_(clusters[x_rows, None] == clusters[None, y_rows], float("inf"))
        torch.minimum(nearest_other[x_rows], block.amin(dim=1), out=nearest_other[x_rows])
    purity = (nearest_other[:, None] >= squared_grid[None, :]).double().mean(0)
    return purity.cpu(), pairs_below.cumsum(0)[: len(grid)].cpu()


def choose_delta(
    points: Tensor,
    clusters: Tensor,
    grid: Sequence[float] = DELTA_GRID,
    purity: float = DEFAULT_PURITY,
    max_edges: int = DEFAULT_MAX_EDGES,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """The paper's radius: the largest of ``grid`` whose balls are at least ``purity`` pure (:func:`purity_radii`),
    among those whose graph fits in ``max_edges``; the smallest radius of ``grid`` if none is."""
    if not grid or list(grid) != sorted(grid) or grid[0] <= 0:
        raise ValueError(f"the delta grid must be positive radii in ascending order, got {list(grid)}")
    fractions, edges = purity_radii(points, clusters, grid, chunk_size)
    passing = [
        delta
        for delta, fraction, count in zip(grid, fractions.tolist(), edges.tolist(), strict=True)
        if fraction >= purity and count <= max_edges
    ]
    return max(passing) if passing else grid[0]


def ball_graph(
    points: Tensor, delta: float, chunk_size: int = DEFAULT_CHUNK_SIZE, max_edges: int = DEFAULT_MAX_EDGES
) -> sparse.csr_array:
    """The graph with an edge ``u -> v`` when ``||x_u - x_v|| < delta``, self-loops included, as a CSR matrix.

    Only blocks on and above the diagonal are measured and each pair found is stored both ways, so the graph is
    exactly symmetric (float32 rounding cannot make ``u -> v`` differ from ``v -> u``): a row lists both the points
    a ball covers and the balls that cover it. Edges are kept as int32 pairs while the blocks are scanned, then
    converted; memory grows with the edges (about 20 bytes each at the peak, 5 once built), never ``N x N``.

    Raises:
        ValueError: the graph would hold more than ``max_edges`` directed edges.
    """
    n = len(points)
    x = points.float()
    x_sq = (x * x).sum(1)
    threshold = delta**2
    sources: list[np.ndarray | None] = []
    targets: list[np.ndarray | None] = []
    edges = n
    # One buffer for every block's distances and one for its mask: allocating them afresh per block, between the
    # small edge arrays that outlive it, fragments the heap (1.7 GiB held for 37,000 edges at 33,000 points).
    distance_buffer = x.new_empty(min(chunk_size, n) ** 2)
    mask_buffer = torch.empty(min(chunk_size, n) ** 2, dtype=torch.bool, device=x.device)
    for start in range(0, n, chunk_size):
        rows = slice(start, min(start + chunk_size, n))
        for column_start in range(start, n, chunk_size):
            columns = slice(column_start, min(column_start + chunk_size, n))
            shape = (rows.stop - rows.start, columns.stop - columns.start)
            block = distance_buffer[: shape[0] * shape[1]].view(shape)
            torch.addmm(x_sq[rows, None], x[rows], x[columns].T, alpha=-2, out=block).add_(x_sq[None, columns])
            within = torch.lt(block, threshold, out=mask_buffer[: shape[0] * shape[1]].view(shape))
            if column_start == start:
                within.triu_(diagonal=1)  # self-loops are added once below, each pair of the block once here
            u, v = within.nonzero(as_tuple=True)
            edges += 2 * len(u)
            if edges > max_edges:
                raise ValueError(
                    f"ProbCover's graph for delta={delta} holds more than max_edges={max_edges} edges; "
                    "set a smaller delta, or raise max_edges if memory allows (about 20 bytes per edge)"
                )
            sources.append((u + start).to("cpu", torch.int32).numpy())
            targets.append((v + column_start).to("cpu", torch.int32).numpy())
    # Both directions and the self-loops, written straight into the final arrays block by block (each block's
    # pairs freed as they are copied), so the scan's int32 pairs and the COO arrays are never held twice over.
    rows_all = np.empty(edges, dtype=np.int32)
    columns_all = np.empty(edges, dtype=np.int32)
    pairs = (edges - n) // 2
    rows_all[2 * pairs :] = columns_all[2 * pairs :] = np.arange(n, dtype=np.int32)
    at = 0
    for block in range(len(sources)):
        u, v = sources[block], targets[block]
        sources[block] = targets[block] = None
        rows_all[at : at + len(u)], columns_all[at : at + len(u)] = u, v
        rows_all[pairs + at : pairs + at + len(u)], columns_all[pairs + at : pairs + at + len(u)] = v, u
        at += len(u)
    graph = sparse.csr_array((np.ones(edges, dtype=np.int8), (rows_all, columns_all)), shape=(n, n))
    del rows_all, columns_all
    return graph


def _neighbours(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The concatenated CSR rows ``rows`` of a graph: the neighbours of each, as one int array."""
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    if lengths.sum() == 0:
        return indices[:0]
    # Each entry's offset from its row's start, added to that start.
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return indices[np.repeat(starts, lengths) + offsets]


def _count_neighbours(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray, group: int = 1 << 22) -> np.ndarray:
    """int64 ``[N]``: how many of ``rows`` list each point as a neighbour; rows taken in groups of about ``group``
    entries, so the temporaries stay ``O(group)`` however many edges the rows hold."""
    counts = np.zeros(len(indptr) - 1, dtype=np.int64)
    ends = np.cumsum(indptr[rows + 1] - indptr[rows])
    start = 0
    while start < len(rows):
        done = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + group, side="right")))
        counts += np.bincount(_neighbours(indptr, indices, rows[start:stop]), minlength=len(counts))
        start = stop
    return counts


def greedy_max_coverage(
    graph: sparse.csr_array, labeled: int, budget: int, generator: torch.Generator | None = None
) -> Selection:
    """ProbCover's greedy: ``budget`` times, the candidate whose ball covers the most points not yet covered.

    Points covered by the labeled points' balls (rows ``0 .. labeled - 1`` of the symmetric ``graph``) start
    covered. Each candidate's gain (uncovered points in its ball) is kept up to date: when a pick covers ``v``, every
    ball containing ``v`` (``v``'s row, by symmetry) loses one, so the whole selection touches each edge at most
    twice, plus one ``argmax`` over the candidates per pick. Ties go to the lowest position. Once every point is
    covered (every ball contains its centre, so no gain is left only then), the rest are drawn uniformly from the
    candidates not yet picked, with ``generator`` (the reference code's plain ``argmax`` of the degrees would then
    return row 0 again and again, whatever it is).

    Returns:
        CPU ``Selection``: positions int64 ``[budget]`` into the candidates (rows ``labeled ..``), scored by how
        many points each pick newly covered (float32; 0 for a random pick).
    """
    indptr, indices = graph.indptr.astype(np.int64), graph.indices
    n = graph.shape[0] - labeled
    covered = np.zeros(graph.shape[0], dtype=bool)
    covered[indices[indptr[0] : indptr[labeled]]] = True  # the labeled rows' neighbour lists are contiguous
    # Each ball's size, less one for every covered point in it (the covered points' rows, by symmetry).
    gain = np.diff(indptr)[labeled:] - _count_neighbours(indptr, indices, np.flatnonzero(covered))[labeled:]
    picked = np.zeros(n, dtype=bool)
    positions, scores = [], []
    for _ in range(budget):
        pick = int(np.argmax(np.where(picked, -1, gain)))
        if gain[pick] <= 0 or picked[pick]:
            remaining = np.flatnonzero(~picked)
            pick = int(remaining[int(torch.randint(len(remaining), (), generator=generator))])
        ball = indices[indptr[labeled + pick] : indptr[labeled + pick + 1]]
        new = ball[~covered[ball]]
        covered[new] = True
        gain -= _count_neighbours(indptr, indices, new)[labeled:]
        picked[pick] = True
        positions.append(pick)
        scores.append(len(new))
    return Selection(torch.tensor(positions, dtype=torch.int64), torch.tensor(scores, dtype=torch.float32))


def prob_cover(
    candidates: Tensor,
    labeled: Tensor,
    budget: int,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    delta: float | None = None,
    purity: float = DEFAULT_PURITY,
    purity_clusters: int = DEFAULT_PURITY_CLUSTERS,
    delta_grid: Sequence[float] = DELTA_GRID,
    max_edges: int = DEFAULT_MAX_EDGES,
) -> Selection:
    """ProbCover on candidates ``[n, D]`` and labeled points ``[m, D]`` (``m = 0``: a cold start).

    All ``m + n`` points (labeled first) are L2-normalised; with ``delta`` ``None`` the radius is chosen by
    :func:`choose_delta` on k-means clusters (``purity_clusters`` of them, seeded with one number drawn from
    ``generator``); then :func:`ball_graph` and :func:`greedy_max_coverage`. Memory: the points, the graph's edges
    (at most ``max_edges``) and one block of distances; never ``N x N``.
    """
    points = normalize_rows(combine_points(candidates, labeled, budget))
    if delta is None:
        seed = int(torch.randint(2**31 - 1, (), generator=generator))
        clusters = cluster_labels(points, min(purity_clusters, len(points)), seed)
        delta = choose_delta(points, clusters, delta_grid, purity, max_edges, chunk_size)
    graph = ball_graph(points, delta, chunk_size, max_edges)
    return greedy_max_coverage(graph, len(labeled), budget, generator)


class ProbCover(FeatureSpaceHeuristic):
    """ProbCover (Yehuda et al., *Active learning through a covering lens*, NeurIPS 2022), see :func:`prob_cover`.

    Measures in ``features`` (as core-set: task features, with ``vae`` eq. 6, with ``task_weight: 0`` the
    task-agnostic features alone), L2-normalised. Scores in ``labeled.csv``: how many pool images each pick newly
    covered.

    Args:
        features: the feature space (default: the task model's features).
        chunk_size: rows and columns per block of distances.
        delta: the balls' radius on unit-norm features; ``null``: the paper's choice, the largest radius of
            ``delta_grid`` whose balls are at least ``purity`` pure with respect to k-means clusters.
        purity: the paper's alpha.
        purity_clusters: clusters of that k-means; ``null``: the data's number of classes (10 before ``setup``).
        delta_grid: radii tried, ascending.
        max_edges: the most directed edges the graph may hold (5 bytes each, about 20 while it is built); a fixed
            ``delta`` whose graph is larger stops with an error, a chosen one is the largest that fits.
    """

    def __init__(
        self,
        features: FeatureSpace | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        delta: float | None = None,
        purity: float = DEFAULT_PURITY,
        purity_clusters: int | None = None,
        delta_grid: Sequence[float] = DELTA_GRID,
        max_edges: int = DEFAULT_MAX_EDGES,
    ) -> None:
        super().__init__(features, chunk_size)
        if delta is not None and not delta > 0:
            raise ValueError(f"delta must be > 0 or null (chosen by purity), got {delta}")
        if not 0 < purity <= 1:
            raise ValueError(f"purity must be in (0, 1], got {purity}")
        if purity_clusters is not None and purity_clusters < 1:
            raise ValueError(f"purity_clusters must be >= 1 or null (the number of classes), got {purity_clusters}")
        self.delta = delta
        self.purity = purity
        self.purity_clusters = purity_clusters
        self.delta_grid = tuple(delta_grid)
        self.max_edges = max_edges
        self._classes: int | None = None

    def setup(self, data: ImageData, device: torch.device) -> None:
        super().setup(data, device)
        self._classes = data.num_classes

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        points, labeled_points = feature_points(self.features, candidates, labeled)
        clusters = self.purity_clusters or self._classes or DEFAULT_PURITY_CLUSTERS
        return prob_cover(
            points,
            labeled_points,
            budget,
            generator,
            self.chunk_size,
            self.delta,
            self.purity,
            clusters,
            self.delta_grid,
            self.max_edges,
        )
