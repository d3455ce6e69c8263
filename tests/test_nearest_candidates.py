"""Candidate restriction to the labeled set's nearest neighbours (NearestCandidates, SEALS): the candidates against a
brute-force reference, the inner heuristic's picks among them, the covering radius, and runs through train.py
(records, resume)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alvae_pl.acquisition import ClassBalanced, CoreSet, NearestCandidates, RandomSampling
from alvae_pl.acquisition.coreset import k_center_greedy
from alvae_pl.acquisition.feature_space import TASK_KEY, FeatureSpace
from alvae_pl.acquisition.nearest_candidates import faiss_available, nearest_neighbours
from alvae_pl.analysis.covering_radius import covering_radius
from alvae_pl.callbacks.label_aware_retraining import find_label_aware
from alvae_pl.data.label_pool import LabelPool
from alvae_pl.data.sources import DigitsSource
from alvae_pl.models.label_aware_features import LabelAwareVAEFeatures
from alvae_pl.models.vae_features import VAEFeatures
from tests.helpers.cli_runs import kill_switch_config, overlay, read_csv, train, train_in_process, without_timings

NEAREST_CORESET = overlay("nearest_candidates_coreset.yaml")
SEARCHES = ["sklearn", pytest.param("faiss", marks=pytest.mark.skipif(not faiss_available(), reason="no faiss"))]


def brute_force_neighbours(queries: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """The reference: every distance in float64, sorted; ``[m, k]`` positions, nearest first."""
    distances = torch.cdist(queries.double(), points.double())
    order = torch.sort(distances, dim=1, stable=True)
    # Ties at the k-th place would make the reference ambiguous: the data must have none.
    assert (order.values[:, k - 1] < order.values[:, k]).all()
    return order.indices[:, :k]


def reference_candidates(features: torch.Tensor, labeled: torch.Tensor, unlabeled: torch.Tensor, k: int) -> set[int]:
    """The union over labeled images of their ``k`` nearest unlabeled images, as pool positions."""
    neighbours = brute_force_neighbours(features[labeled], features[unlabeled], k)
    return set(unlabeled[neighbours.flatten()].tolist())


@pytest.mark.parametrize("search", SEARCHES)
def test_nearest_neighbours_are_the_brute_force_ones(search: str) -> None:
    generator = torch.Generator().manual_seed(0)
    points, queries = torch.randn(500, 16, generator=generator), torch.randn(40, 16, generator=generator)
    found = nearest_neighbours(queries, points, 7, search)
    assert torch.equal(found, brute_force_neighbours(queries, points, 7))
    # More neighbours than points: all of them.
    assert nearest_neighbours(queries, points[:3], 7, search).shape == (40, 3)


@pytest.fixture(scope="module")
def digits():
    return DigitsSource(image_size=8).load()


def pixel_features(data, pool: LabelPool) -> torch.Tensor:
    return data.train.images[pool.dataset_indices].flatten(1).double() / 255


@pytest.mark.parametrize("search", SEARCHES)
def test_candidates_are_the_unlabeled_neighbours_of_the_labeled_set(digits, search: str) -> None:
    pool = LabelPool(len(digits.train.images), 900, 40, pool_seed=3)
    heuristic = NearestCandidates(RandomSampling(), neighbours=4, search=search)
    heuristic.setup(digits, torch.device("cpu"))
    candidates = heuristic.candidates(pool.unlabeled, torch.Generator().manual_seed(0), pool)
    expected = reference_candidates(pixel_features(digits, pool), pool.labeled, pool.unlabeled, 4)
    assert candidates.tolist() == sorted(expected)
    # Far fewer than the 860 unlabeled images, none of them labeled.
    assert 4 <= len(candidates) <= 160 and not torch.isin(candidates, pool.labeled).any()

    # A round later: the new labels bring their own neighbours, and leave the candidates themselves.
    pool.label(candidates[:10], round_index=1)
    after = heuristic.candidates(pool.unlabeled, torch.Generator().manual_seed(0), pool)
    assert after.tolist() == sorted(reference_candidates(pixel_features(digits, pool), pool.labeled, pool.unlabeled, 4))


def test_too_few_candidates_are_topped_up_at_random_from_the_round_generator(digits) -> None:
    pool = LabelPool(len(digits.train.images), 900, 20, pool_seed=1)
    heuristic = NearestCandidates(RandomSampling(), neighbours=1, min_candidates=200)
    heuristic.setup(digits, torch.device("cpu"))
    near = reference_candidates(pixel_features(digits, pool), pool.labeled, pool.unlabeled, 1)
    first = heuristic.candidates(pool.unlabeled, torch.Generator().manual_seed(5), pool)
    again = heuristic.candidates(pool.unlabeled, torch.Generator().manual_seed(5), pool)
    other = heuristic.candidates(pool.unlabeled, torch.Generator().manual_seed(6), pool)
    assert len(first) == 200 and first.tolist() == sorted(first.tolist())
    assert near <= set(first.tolist()) and near <= set(other.tolist())
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.isin(first, pool.labeled).any()
    # A cold start (nothing labeled): every unlabeled image.
    cold = LabelPool(len(digits.train.images), 900, 0, pool_seed=1, defer_initial=True)
    assert torch.equal(heuristic.candidates(cold.unlabeled, torch.Generator(), cold), cold.unlabeled)

    # No neighbours: a uniform random subset of min_candidates, the first of a permutation from the round's generator.
    subset = NearestCandidates(RandomSampling(), neighbours=0, min_candidates=200)
    subset.setup(digits, torch.device("cpu"))
    drawn = subset.candidates(pool.unlabeled, torch.Generator().manual_seed(5), pool)
    expected = pool.unlabeled[torch.randperm(len(pool.unlabeled), generator=torch.Generator().manual_seed(5))[:200]]
    assert torch.equal(drawn, expected.sort().values)


def test_the_picks_are_the_inner_heuristics_picks_among_the_candidates(digits) -> None:
    pool = LabelPool(len(digits.train.images), 900, 40, pool_seed=0)
    wrapped = NearestCandidates(CoreSet(), neighbours=3)
    wrapped.setup(digits, torch.device("cpu"))
    candidates = wrapped.candidates(pool.unlabeled, torch.Generator().manual_seed(0), pool)
    # Task features of every pool image, as embed would give: here a fixed random projection of the pixels.
    task = pixel_features(digits, pool).float() @ torch.randn(64, 12, generator=torch.Generator().manual_seed(2))
    selection = wrapped.select(
        {TASK_KEY: task[candidates], "index": candidates},
        {TASK_KEY: task[pool.labeled], "index": pool.labeled},
        budget=15,
        generator=torch.Generator().manual_seed(0),
    )
    # The reference: k-center greedy among those candidates only.
    expected = k_center_greedy(task[candidates], task[pool.labeled], 15)
    assert torch.equal(selection.positions, expected.positions)
    assert torch.allclose(selection.scores, expected.scores)


def test_the_covering_radius_is_the_largest_distance_to_the_nearest_center() -> None:
    generator = torch.Generator().manual_seed(0)
    points, centers = torch.randn(300, 5, generator=generator), torch.randn(12, 5, generator=generator)
    reference = torch.cdist(points.double(), centers.double()).min(dim=1).values.max()
    assert covering_radius(points, centers) == pytest.approx(float(reference), rel=1e-9)
    # Exact core-set lowers it at least as well as a random choice of the same size, on clustered points.
    pool = torch.cat([torch.randn(200, 2, generator=generator) * 0.1 + 5 * c for c in torch.randn(8, 2)])
    labeled = pool[:1]
    picks = k_center_greedy(pool, labeled, 9).positions
    drawn = torch.randperm(len(pool), generator=generator)[:9]
    assert covering_radius(pool, pool[torch.cat([torch.tensor([0]), picks])]) <= covering_radius(
        pool, pool[torch.cat([torch.tensor([0]), drawn])]
    )
    with pytest.raises(ValueError, match="at least one center"):
        covering_radius(points, centers[:0])


def test_bad_settings_get_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="remove one level"):
        NearestCandidates(NearestCandidates(CoreSet()))
    with pytest.raises(ValueError, match="neighbours must be at least 0"):
        NearestCandidates(CoreSet(), neighbours=-1)
    with pytest.raises(ValueError, match="set min_candidates"):
        NearestCandidates(CoreSet(), neighbours=0)
    with pytest.raises(ValueError, match="fixed feature space"):
        NearestCandidates(CoreSet(), encoder=LabelAwareVAEFeatures())
    with pytest.raises(ValueError, match="needs the label pool"):
        NearestCandidates(CoreSet()).candidates(torch.arange(5), torch.Generator())
    # The wrapper reads as its inner heuristic to the loop, and lets the loop find a label-aware VAE inside it.
    label_aware = LabelAwareVAEFeatures()
    wrapped = NearestCandidates(ClassBalanced(CoreSet(FeatureSpace(vae=label_aware))))
    assert wrapped.uses_labeled and not NearestCandidates(RandomSampling()).uses_model
    assert find_label_aware(wrapped, torch.nn.Module()) == [label_aware]


def test_a_run_picks_among_the_neighbours_of_the_labeled_set(tmp_path: Path) -> None:
    result = train_in_process(
        "digits_coreset.yaml", tmp_path, *NEAREST_CORESET, "--active.max_labels=120", "--active.epochs_first=1"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "digits_coreset" / "seed_0"
    assert [row["labels"] for row in read_csv(run / "history.csv")] == ["60", "120"]
    labeled = read_csv(run / "labeled.csv")
    initial = torch.tensor([int(row["pool_index"]) for row in labeled if row["round"] == "0"])
    picked = {int(row["pool_index"]) for row in labeled if row["round"] == "1"}
    assert len(initial) == 60 and len(picked) == 60
    # The whole train split is the pool (pool_size null): pixel features of 28 x 28 images, 5 neighbours each.
    data = DigitsSource().load()
    features = data.train.images.flatten(1).double() / 255
    unlabeled = torch.tensor(sorted(set(range(len(features))) - set(initial.tolist())))
    near = reference_candidates(features, initial, unlabeled, 5)
    assert len(near) < len(unlabeled) / 3 and picked <= near


@pytest.fixture(scope="module")
def vae_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The paper's VAE on digits by its own config, one epoch on 256 train images: a fixed encoder to search in."""
    from alvae_pl.cli import main

    folder = tmp_path_factory.mktemp("vae")
    main(["fit", "--config", "configs/vae_digits.yaml", f"--trainer.logger.init_args.save_dir={folder}",
          "--trainer.max_epochs=1", "--data.pool_size=256", "--trainer.enable_progress_bar=false"])  # fmt: skip
    return folder / "vae_digits" / "seed_0" / "checkpoints" / "last.ckpt"


def test_a_run_finds_the_neighbours_in_the_vae_features(tmp_path: Path, vae_checkpoint: Path) -> None:
    result = train_in_process(
        "digits_coreset.yaml",
        tmp_path,
        *NEAREST_CORESET,
        "--config",
        "configs/vae_features/digits_nearest.yaml",
        f"--active.heuristic.init_args.encoder.checkpoint={vae_checkpoint}",
        "--active.max_labels=120",
        "--active.epochs_first=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    labeled = read_csv(tmp_path / "digits_coreset" / "seed_0" / "labeled.csv")
    initial = torch.tensor([int(row["pool_index"]) for row in labeled if row["round"] == "0"])
    picked = {int(row["pool_index"]) for row in labeled if row["round"] == "1"}
    images = DigitsSource().load().train.images
    features = VAEFeatures(str(vae_checkpoint)).load(1, 28, "cpu")(images)  # V(u), [N, 32]
    unlabeled = torch.tensor(sorted(set(range(len(features))) - set(initial.tolist())))
    near = reference_candidates(features, initial, unlabeled, 5)
    assert len(picked) == 60 and len(near) < len(unlabeled) / 3 and picked <= near


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_picks(tmp_path: Path, reference_run) -> None:
    expected = reference_run("digits_coreset.yaml", *NEAREST_CORESET)
    folder = tmp_path / "killed"
    folder.mkdir()
    # Killed at the end of round one, after its acquisition was written but before the checkpoint was.
    switch = folder / "kill.yaml"
    switch.write_text(kill_switch_config("{at_checkpoint_of_epoch: 1}"))
    killed = train("digits_coreset.yaml", folder, *NEAREST_CORESET, "--config", str(switch), "--ckpt_path=last")
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = train("digits_coreset.yaml", folder, *NEAREST_CORESET, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    actual = folder / "digits_coreset" / "seed_0"
    assert read_csv(actual / "labeled.csv") == read_csv(expected / "labeled.csv")
    assert without_timings(read_csv(actual / "history.csv")) == without_timings(read_csv(expected / "history.csv"))


def test_too_few_candidates_for_the_budget_stop_the_run_with_what_to_do(tmp_path: Path) -> None:
    # 60 labeled images with one neighbour each offer at most 60 distinct candidates, fewer than 60 picks once two
    # share a neighbour. The run stops at its first acquisition, before any record is written.
    result = train_in_process(
        "digits_coreset.yaml", tmp_path, *NEAREST_CORESET, "--active.heuristic.init_args.neighbours=1",
        "--active.max_labels=120", "--active.epochs_first=1",
    )  # fmt: skip
    assert result.returncode != 0
    assert "candidates for 60 picks: let it offer more (NearestCandidates: min_candidates" in result.stderr
    run = tmp_path / "digits_coreset" / "seed_0"
    assert not (run / "labeled.csv").exists() and not (run / "history.csv").exists()
