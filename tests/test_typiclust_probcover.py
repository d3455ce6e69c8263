"""TypiClust and ProbCover against dense brute force: full distance matrices and explicit loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import pairwise_distances

from alvae_pl.acquisition import ProbCover, TypiClust
from alvae_pl.acquisition.probcover import (
    DELTA_GRID,
    ball_graph,
    choose_delta,
    normalize_rows,
    prob_cover,
    purity_radii,
)
from alvae_pl.acquisition.typiclust import typicality, typiclust
from tests.helpers.cli_runs import overlay, read_csv, train_in_process


# ------------------------------------------------------------------------------------------ data
def clustered_points(n: int, m: int, dim: int, seed: int, duplicates: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Candidates ``[n, dim]`` and labeled points ``[m, dim]`` from 8 Gaussian clusters of different sizes, away
    from the origin; with ``duplicates``, some candidates copy other candidates or labeled points exactly."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(8, dim)) * 3 + 1
    which = rng.choice(8, size=n + m, p=np.array([8, 6, 5, 4, 3, 2, 1, 1]) / 30)
    points = (means[which] + rng.normal(size=(n + m, dim))).astype(np.float32)
    candidates, labeled = points[:n], points[n:]
    if duplicates:
        candidates[10:15] = candidates[3]
        candidates[40:60:2] = candidates[41:61:2]
        if m:
            candidates[70:73] = labeled[0]
    return candidates, labeled


def first_seed(generator_seed: int) -> int:
    """The k-means seed both heuristics draw first from a generator seeded with ``generator_seed``."""
    return int(torch.randint(2**31 - 1, (), generator=torch.Generator().manual_seed(generator_seed)))


def brute_force_kmeans(points: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """The documented clustering: scikit-learn, one k-means++ init, mini-batch above 50 clusters."""
    if clusters <= 50:
        model = KMeans(n_clusters=clusters, n_init=1, random_state=seed)
    else:
        model = MiniBatchKMeans(n_clusters=clusters, n_init=1, batch_size=4096, random_state=seed)
    return model.fit_predict(points.astype(np.float32))


# ------------------------------------------------------------------------------------------ TypiClust
def brute_force_typicality(points: np.ndarray, neighbours: int = 20) -> np.ndarray:
    distances = pairwise_distances(points.astype(np.float64))
    np.fill_diagonal(distances, np.inf)
    k = min(neighbours, len(points) - 1)
    if k == 0:
        return np.full(len(points), np.inf)
    with np.errstate(divide="ignore"):
        return 1.0 / np.sort(distances, axis=1)[:, :k].mean(axis=1)


def brute_force_typiclust(
    candidates: np.ndarray,
    labeled: np.ndarray,
    budget: int,
    generator_seed: int,
    max_clusters: int = 500,
    min_cluster_size: int = 5,
) -> tuple[list[int], list[float]]:
    """Every pick scans every cluster: the one with (too small last, fewest labels so far, largest, lowest id)
    gives its most typical candidate not yet picked (lowest position on ties)."""
    n, m = len(candidates), len(labeled)
    points = np.concatenate([labeled, candidates])
    clusters = brute_force_kmeans(points, min(m + budget, max_clusters, n + m), first_seed(generator_seed))
    typical = brute_force_typicality(points)
    labels = {c: int((clusters[:m] == c).sum()) for c in set(clusters.tolist())}
    picks: list[int] = []
    for _ in range(budget):
        best_key, best_cluster = None, None
        for cluster in sorted(labels):
            left = [i for i in range(n) if clusters[m + i] == cluster and i not in picks]
            if not left:
                continue
            size = int((clusters == cluster).sum())
            key = (size <= min_cluster_size, labels[cluster], -size, cluster)
            if best_key is None or key < best_key:
                best_key, best_cluster = key, cluster
        left = [i for i in range(n) if clusters[m + i] == best_cluster and i not in picks]
        picks.append(min(left, key=lambda i: (-typical[m + i], i)))
        labels[best_cluster] += 1
    return picks, [typical[m + i] for i in picks]


@pytest.mark.parametrize(
    ("n", "m", "budget", "seed", "duplicates", "chunk_size"),
    [
        (200, 0, 20, 0, False, 1024),  # cold start
        (200, 30, 20, 1, False, 64),
        (180, 20, 40, 2, True, 33),  # duplicates tie in typicality
        (150, 50, 30, 3, False, 1024),  # 80 clusters: mini-batch k-means
        (120, 10, 100, 4, True, 1024),  # budget above the cluster cap: several picks per cluster
    ],
)
def test_typiclust_equals_brute_force(n, m, budget, seed, duplicates, chunk_size):
    candidates, labeled = clustered_points(n, m, 6, seed, duplicates)
    max_clusters = 25 if budget == 100 else 500
    selection = typiclust(
        torch.from_numpy(candidates),
        torch.from_numpy(labeled),
        budget,
        torch.Generator().manual_seed(seed),
        chunk_size=chunk_size,
        max_clusters=max_clusters,
    )
    picks, scores = brute_force_typiclust(candidates, labeled, budget, seed, max_clusters=max_clusters)
    assert selection.positions.tolist() == picks
    assert len(set(picks)) == budget and selection.positions.dtype == torch.int64
    np.testing.assert_allclose(selection.scores.numpy(), scores, rtol=1e-4)


@pytest.mark.parametrize("chunk_size", [1, 7, 50, 1024])
def test_typicality_equals_brute_force_for_any_chunk(chunk_size):
    candidates, labeled = clustered_points(90, 10, 5, seed=5, duplicates=True)
    points = np.concatenate([labeled, candidates])
    ours = typicality(torch.from_numpy(points), 20, chunk_size).numpy()
    expected = brute_force_typicality(points)
    finite = np.isfinite(expected)
    assert (np.isfinite(ours) == finite).all()
    np.testing.assert_allclose(ours[finite], expected[finite], rtol=1e-4)
    # Few points: k is clipped to the others; one point alone is infinitely typical.
    np.testing.assert_allclose(typicality(torch.from_numpy(points[:4]), 20).numpy(), brute_force_typicality(points[:4]))
    assert typicality(torch.ones(1, 3)).tolist() == [float("inf")]


# ------------------------------------------------------------------------------------------ ProbCover
def brute_force_prob_cover(
    candidates: np.ndarray, labeled: np.ndarray, budget: int, delta: float, generator: torch.Generator
) -> tuple[list[int], list[int]]:
    """The paper's greedy on a dense adjacency matrix; a random unpicked candidate once nothing is left to cover."""
    n, m = len(candidates), len(labeled)
    points = np.concatenate([labeled, candidates]).astype(np.float64)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    adjacency = pairwise_distances(points) < delta
    covered = adjacency[:m].any(axis=0)
    picks: list[int] = []
    scores: list[int] = []
    for _ in range(budget):
        gains = [-1 if i in picks else int((adjacency[m + i] & ~covered).sum()) for i in range(n)]
        pick = int(np.argmax(gains))  # the first maximum: the lowest position
        if gains[pick] <= 0:
            remaining = [i for i in range(n) if i not in picks]
            pick = remaining[int(torch.randint(len(remaining), (), generator=generator))]
        new = adjacency[m + pick] & ~covered
        picks.append(pick)
        scores.append(int(new.sum()))
        covered |= new
    return picks, scores


@pytest.mark.parametrize(
    ("n", "m", "budget", "delta", "seed", "duplicates", "chunk_size"),
    [
        (200, 0, 25, 0.3, 0, False, 1024),  # cold start
        (200, 30, 25, 0.3, 1, False, 16),
        (180, 20, 40, 0.2, 2, True, 33),  # duplicates: equal gains, the lowest position wins
        (100, 10, 90, 0.5, 3, False, 1024),  # everything covered early: random picks from the generator
    ],
)
def test_prob_cover_equals_brute_force(n, m, budget, delta, seed, duplicates, chunk_size):
    candidates, labeled = clustered_points(n, m, 3, seed, duplicates)
    selection = prob_cover(
        torch.from_numpy(candidates),
        torch.from_numpy(labeled),
        budget,
        torch.Generator().manual_seed(seed),
        chunk_size=chunk_size,
        delta=delta,
    )
    picks, scores = brute_force_prob_cover(candidates, labeled, budget, delta, torch.Generator().manual_seed(seed))
    assert selection.positions.tolist() == picks
    assert selection.scores.tolist() == scores
    assert len(set(picks)) == budget


def test_ball_graph_is_the_symmetric_dense_graph_for_any_chunk():
    candidates, labeled = clustered_points(120, 20, 4, seed=6, duplicates=True)
    points = normalize_rows(torch.from_numpy(np.concatenate([labeled, candidates])))
    expected = pairwise_distances(points.numpy().astype(np.float64)) < 0.4
    for chunk_size in (1, 9, 140, 1024):
        graph = ball_graph(points, 0.4, chunk_size)
        np.testing.assert_array_equal(graph.toarray() > 0, expected)
    with pytest.raises(ValueError, match="set a smaller delta"):
        ball_graph(points, 0.4, 64, max_edges=int(expected.sum()) - 1)


def brute_force_choose_delta(points: np.ndarray, clusters: np.ndarray, purity: float, max_edges: int) -> float:
    """Every radius of the grid, every ball: pure when every point strictly inside shares the centre's cluster."""
    distances = pairwise_distances(points.astype(np.float64))
    best = None
    for delta in DELTA_GRID:
        pure = [all(clusters[distances[x] < delta] == clusters[x]) for x in range(len(points))]
        if np.mean(pure) >= purity and (distances < delta).sum() <= max_edges:
            best = delta
    return DELTA_GRID[0] if best is None else best


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("purity", "max_edges"), [(0.95, 10**9), (0.8, 10**9), (0.8, 1000)])
def test_chosen_delta_equals_brute_force_purity_search(seed, purity, max_edges):
    candidates, labeled = clustered_points(180, 20, 3, seed)
    points = normalize_rows(torch.from_numpy(np.concatenate([labeled, candidates])))
    clusters = brute_force_kmeans(points.numpy(), 5, seed)
    ours = choose_delta(points, torch.from_numpy(clusters).long(), DELTA_GRID, purity, max_edges, chunk_size=37)
    assert ours == brute_force_choose_delta(points.numpy(), clusters, purity, max_edges)
    fractions, _ = purity_radii(points, torch.from_numpy(clusters).long(), DELTA_GRID)
    assert fractions.tolist() == sorted(fractions.tolist(), reverse=True)  # a larger ball is never purer


def test_prob_cover_without_delta_uses_the_purity_radius_of_seeded_kmeans():
    candidates, labeled = clustered_points(200, 20, 3, seed=7)
    points = normalize_rows(torch.from_numpy(np.concatenate([labeled, candidates]))).numpy()
    clusters = brute_force_kmeans(points, 8, first_seed(7))
    delta = brute_force_choose_delta(points, clusters, 0.95, 10**9)
    generator = torch.Generator().manual_seed(7)
    torch.randint(2**31 - 1, (), generator=generator)  # the k-means seed comes first
    expected, _ = brute_force_prob_cover(candidates, labeled, 30, delta, generator)
    heuristic = ProbCover(purity_clusters=8)
    selection = heuristic.select(
        {"task": torch.from_numpy(candidates), "index": torch.arange(200)},
        {"task": torch.from_numpy(labeled), "index": torch.arange(200, 220)},
        30,
        torch.Generator().manual_seed(7),
    )
    assert selection.positions.tolist() == expected


# ------------------------------------------------------------------------------------------ both heuristics
HEURISTICS = {"typiclust": lambda: TypiClust(), "probcover": lambda: ProbCover(delta=0.3)}


@pytest.mark.parametrize("name", sorted(HEURISTICS))
@pytest.mark.parametrize("m", [0, 40])
def test_same_seed_same_picks_distinct_candidates_only(name, m):
    candidates, labeled = clustered_points(250, m, 8, seed=8, duplicates=True)
    heuristic = HEURISTICS[name]()
    cand = {"task": torch.from_numpy(candidates), "index": torch.arange(m, m + 250)}
    # A cold start hands select an empty labeled dict.
    lab = {"task": torch.from_numpy(labeled), "index": torch.arange(m)} if m else {}

    def picks(seed: int) -> list[int]:
        return heuristic.select(cand, lab, 60, torch.Generator().manual_seed(seed)).positions.tolist()

    first = picks(0)
    assert first == picks(0)
    assert len(set(first)) == 60 and all(0 <= p < 250 for p in first)
    if not m:  # the loop's labeled outputs for an empty labeled set: an index and nothing embedded
        no_rows = {"index": torch.zeros(0, dtype=torch.int64)}
        assert heuristic.select(cand, no_rows, 60, torch.Generator().manual_seed(0)).positions.tolist() == first


@pytest.mark.parametrize("name", sorted(HEURISTICS))
def test_bad_inputs_raise_one_clear_error(name):
    heuristic = HEURISTICS[name]()
    cand = {"task": torch.ones(10, 4), "index": torch.arange(10)}
    with pytest.raises(ValueError, match="budget must be between 1 and the number of candidates"):
        heuristic.select(cand, {}, 11, torch.Generator())
    cand["task"][3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        heuristic.select(cand, {}, 2, torch.Generator())


def test_constructors_reject_bad_settings():
    with pytest.raises(ValueError, match="delta must be > 0"):
        ProbCover(delta=0.0)
    with pytest.raises(ValueError, match="purity must be in"):
        ProbCover(purity=1.5)
    with pytest.raises(ValueError, match="max_clusters and neighbours"):
        TypiClust(max_clusters=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["typiclust", "probcover"])
def test_one_round_of_train_py_labels_exactly_the_budget(tmp_path: Path, name: str) -> None:
    result = train_in_process(
        "digits_coreset.yaml",
        tmp_path,
        *overlay(f"{name}.yaml"),
        "--active.max_labels=120",
        "--active.epochs_first=1",
        "--active.epochs_increment=0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "digits_coreset" / "seed_0"
    assert [int(r["labels"]) for r in read_csv(run / "history.csv")] == [60, 120]
    labeled = read_csv(run / "labeled.csv")
    initial = {r["pool_index"] for r in labeled if r["round"] == "0"}
    picked = [r["pool_index"] for r in labeled if r["round"] == "1"]
    assert len(initial) == 60 and len(picked) == 60
    assert len(set(picked)) == 60 and not initial & set(picked)
    scores = [float(r["score"]) for r in labeled if r["round"] == "1"]
    if name == "typiclust":
        assert all(score > 0 for score in scores)  # 1 / mean neighbour distance
    else:
        assert scores == sorted(scores, reverse=True)  # greedy coverage gains never grow


def test_distances_come_in_blocks_never_n_by_n(monkeypatch):
    shapes = []
    addmm = torch.addmm

    def recording(*args, **kwargs):
        result = addmm(*args, **kwargs)
        shapes.append(tuple(result.shape))
        return result

    monkeypatch.setattr(torch, "addmm", recording)
    candidates, labeled = clustered_points(200, 20, 4, seed=9)
    typiclust(torch.from_numpy(candidates), torch.from_numpy(labeled), 10, torch.Generator(), chunk_size=16)
    prob_cover(torch.from_numpy(candidates), torch.from_numpy(labeled), 10, torch.Generator(), chunk_size=16)
    assert shapes and max(rows * columns for rows, columns in shapes) <= 16 * 16
