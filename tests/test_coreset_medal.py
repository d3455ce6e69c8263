"""Core-set (eq. 1), MedAL (eq. 2) and their feature space (eq. 6) against from-scratch brute force."""

from __future__ import annotations

import sys
import textwrap
import warnings
from functools import partial
from typing import NamedTuple

import numpy as np
import pytest
import torch
from sklearn.metrics import pairwise_distances

from alvae_pl.acquisition import coreset, medal
from alvae_pl.acquisition.coreset import CoreSet, choose_algorithm, k_center_greedy
from alvae_pl.acquisition.distances import prepare_points
from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.acquisition.medal import MedAL, greedy_mean_distance
from alvae_pl.data.image_data import ImageData, ImageSplit
from alvae_pl.models.vae_features import VAEFeatures
from tests.helpers.memory_probe import run_memory_probe

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ------------------------------------------------------------------------------------------ brute force
def brute_force_k_center(candidates: np.ndarray, labeled: np.ndarray, budget: int, first: int) -> tuple[list, list]:
    """Eq. 1 recomputed from scratch at every pick; ``first`` is the pick made when nothing is labeled."""
    centers = [row for row in labeled.astype(np.float64)]
    points = candidates.astype(np.float64)
    picks, scores = [], []
    for _ in range(budget):
        if not centers:
            pick, score = first, np.inf
        else:
            nearest = pairwise_distances(points, np.stack(centers)).min(axis=1)
            nearest[picks] = -1.0
            pick = int(np.argmax(nearest))
            score = nearest[pick]
        picks.append(pick)
        scores.append(score)
        centers.append(points[pick])
    return picks, scores


def brute_force_mean_distance(
    candidates: np.ndarray, labeled: np.ndarray, budget: int, first: int
) -> tuple[list, list]:
    """Eq. 2 recomputed from scratch at every pick; ``first`` is the pick made when nothing is labeled."""
    members = [row for row in labeled.astype(np.float64)]
    points = candidates.astype(np.float64)
    picks, scores = [], []
    for _ in range(budget):
        if not members:
            pick, score = first, np.inf
        else:
            mean = pairwise_distances(points, np.stack(members)).mean(axis=1)
            mean[picks] = -np.inf
            pick = int(np.argmax(mean))
            score = mean[pick]
        picks.append(pick)
        scores.append(score)
        members.append(points[pick])
    return picks, scores


def random_points(n: int, m: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous points away from the origin (like ReLU features), so that exact ties have probability 0."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(n + m, dim, generator=generator) * 3 + 2
    return points[:n], points[n:]


def clustered_points(n: int, m: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A mixture of 10 well-separated Gaussian clusters, like a trained classifier's embeddings."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(10, dim, generator=generator) * 4
    points = means[torch.randint(10, (n + m,), generator=generator)] + torch.randn(n + m, dim, generator=generator)
    return points[:n], points[n:]


K_CENTER_ALGORITHMS = ["lazy", "dense"]
# Both k-center algorithms run on the CPU here: forcing "dense" checks the GPU's algorithm without a GPU.
GREEDY = {
    "k_center_lazy": (partial(k_center_greedy, algorithm="lazy"), brute_force_k_center),
    "k_center_dense": (partial(k_center_greedy, algorithm="dense"), brute_force_k_center),
    "mean_distance": (greedy_mean_distance, brute_force_mean_distance),
}
# (n candidates, m labeled, dim, budget, chunk_size): chunks smaller than n and m exercise the blockwise sums.
SIZES = [(40, 0, 3, 40, 1024), (300, 40, 16, 60, 7), (1000, 0, 8, 50, 64), (1200, 300, 64, 80, 128)]


@pytest.mark.parametrize("method", sorted(GREEDY))
@pytest.mark.parametrize(("n", "m", "dim", "budget", "chunk_size"), SIZES)
def test_greedy_selection_equals_brute_force(method, n, m, dim, budget, chunk_size):
    ours, brute_force = GREEDY[method]
    candidates, labeled = random_points(n, m, dim, seed=n + m)
    selection = ours(candidates, labeled, budget, torch.Generator().manual_seed(3), chunk_size=chunk_size)
    first = int(selection.positions[0])
    expected_picks, expected_scores = brute_force(candidates.numpy(), labeled.numpy(), budget, first)
    assert selection.positions.tolist() == expected_picks
    assert selection.positions.dtype == torch.int64
    np.testing.assert_allclose(selection.scores.numpy(), expected_scores, rtol=1e-4)


@pytest.mark.parametrize("points", [clustered_points, random_points])
@pytest.mark.parametrize("m", [0, 150])
def test_k_center_measures_few_distances_per_pick_and_still_equals_brute_force(monkeypatch, points, m):
    measured = []

    def counting(x, x_sq, rows, centers, *args):
        measured.append((len(x) if rows is None else len(rows)) * len(centers))
        return nearest_squared_distances(x, x_sq, rows, centers, *args)

    nearest_squared_distances = coreset._nearest_squared_distances
    monkeypatch.setattr(coreset, "_nearest_squared_distances", counting)
    candidates, labeled = points(3000, m, 32, seed=6)
    selection = k_center_greedy(
        candidates, labeled, 100, torch.Generator().manual_seed(0), chunk_size=256, algorithm="lazy"
    )
    first = int(selection.positions[0])
    assert selection.positions.tolist() == brute_force_k_center(candidates.numpy(), labeled.numpy(), 100, first)[0]
    # After the n x m distances to the labeled set, updating every candidate at every pick would cost 100 x 3000
    # distances; the lazy bounds re-measure only the few candidates that could be the farthest. With no labeled
    # point the first centers each move many candidates' nearest center, so saving starts later.
    assert sum(measured[1:]) < (0.1 if m else 0.5) * 100 * 3000


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", sorted(GREEDY))
def test_chunk_size_and_device_do_not_change_the_selection(method, device):
    ours, _ = GREEDY[method]
    candidates, labeled = random_points(200, 50, 10, seed=1)
    reference = ours(candidates, labeled, 40, chunk_size=1024)
    for chunk_size in (1, 33, 200):
        selection = ours(candidates.to(device), labeled.to(device), 40, chunk_size=chunk_size)
        assert selection.positions.device.type == "cpu"
        assert selection.positions.tolist() == reference.positions.tolist()


@pytest.mark.parametrize("method", sorted(GREEDY))
def test_first_pick_without_labels_is_drawn_from_the_generator(method):
    ours, _ = GREEDY[method]
    candidates, empty = random_points(200, 0, 5, seed=2)

    def first_pick(seed: int) -> int:
        return int(ours(candidates, empty, 3, torch.Generator().manual_seed(seed)).positions[0])

    firsts = [first_pick(seed) for seed in range(8)]
    assert len(set(firsts)) > 1, "the first pick must not be a fixed index (e.g. always 0)"
    assert firsts == [first_pick(seed) for seed in range(8)], "the same generator seed must give the same picks"


def symmetric_pool() -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates whose distances to the origin (the one labeled point) and to each other tie exactly."""
    candidates = torch.tensor([[0.5, 0], [0, 1], [-1, 0], [1, 0], [0, -1], [-0.5, 0]])
    return candidates, torch.zeros(1, 2)


@pytest.mark.parametrize("algorithm", K_CENTER_ALGORITHMS)
def test_k_center_ties_go_to_the_lowest_position(algorithm):
    # The four unit points all lie at distance 1 from their nearest center until each is picked; the pool is
    # centred on the origin already, so these ties survive float32 exactly.
    selection = k_center_greedy(*symmetric_pool(), budget=6, algorithm=algorithm)
    assert selection.positions.tolist() == [1, 2, 3, 4, 0, 5]
    assert selection.scores.tolist() == [1, 1, 1, 1, 0.5, 0.5]


def test_mean_distance_ties_go_to_the_lowest_position():
    # After (0, 1) and (0, -1) are picked, (-1, 0) and (1, 0) tie at mean distance (1 + 2 sqrt 2) / 3.
    selection = greedy_mean_distance(*symmetric_pool(), budget=6)
    assert selection.positions.tolist() == [1, 4, 2, 3, 0, 5]
    np.testing.assert_allclose(selection.scores[2].item(), (1 + 2 * 2**0.5) / 3, rtol=1e-6)


@pytest.mark.parametrize("method", sorted(GREEDY))
def test_duplicates_of_labeled_points_come_last(method):
    ours, _ = GREEDY[method]
    candidates, labeled = random_points(30, 5, 4, seed=4)
    candidates[[3, 17]] = labeled[[0, 2]]
    positions = ours(candidates, labeled, 30).positions.tolist()
    assert sorted(positions) == list(range(30)), "every candidate is picked exactly once"
    if method.startswith("k_center"):
        assert set(positions[-2:]) == {3, 17}, "points already covered have distance 0 and are picked last"


@pytest.mark.parametrize("method", sorted(GREEDY))
def test_bad_inputs_raise_one_clear_error(method):
    ours, _ = GREEDY[method]
    candidates, labeled = random_points(10, 3, 4, seed=5)
    with pytest.raises(ValueError, match="budget must be between 1 and the number of candidates"):
        ours(candidates, labeled, 11)
    with pytest.raises(ValueError, match="budget must be between 1"):
        ours(candidates, labeled, 0)
    with pytest.raises(ValueError, match="4-d but the labeled points 5-d"):
        ours(candidates, torch.ones(3, 5), 2)
    candidates[4, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        ours(candidates, labeled, 2)


def test_k_center_algorithm_follows_the_device_and_can_be_forced():
    assert choose_algorithm("auto", torch.device("cpu")) == "lazy"
    assert choose_algorithm("auto", torch.device("cuda", 0)) == "dense"
    assert choose_algorithm("dense", torch.device("cpu")) == "dense"
    assert choose_algorithm("lazy", torch.device("cuda")) == "lazy"
    with pytest.raises(ValueError, match="algorithm must be one of"):
        k_center_greedy(*random_points(10, 3, 4, seed=5), 2, algorithm="eager")


@pytest.mark.parametrize("points", [clustered_points, random_points])
@pytest.mark.parametrize("m", [0, 150])
def test_k_center_lazy_and_dense_pick_the_same_but_for_near_ties_within_rounding(points, m):
    candidates, labeled = points(2000, m, 32, seed=7)
    lazy, dense = (
        k_center_greedy(candidates, labeled, 300, torch.Generator().manual_seed(1), chunk_size=256, algorithm=name)
        for name in K_CENTER_ALGORITHMS
    )
    lazy_picks, dense_picks = lazy.positions.tolist(), dense.positions.tolist()
    same = next((i for i, (a, b) in enumerate(zip(lazy_picks, dense_picks, strict=True)) if a != b), len(lazy_picks))
    torch.testing.assert_close(dense.scores[:same], lazy.scores[:same], rtol=1e-5, atol=0)
    if same < len(lazy_picks):
        # The two sum the same products in different orders, so a near-tie may go either way (here, on the
        # clustered points: 5e-7 apart at pick 91 with m = 0, 1e-6 at pick 200 with m = 150). Then both picks
        # must still be farthest up to float32 rounding.
        centers = np.concatenate([labeled.numpy(), candidates.numpy()[lazy_picks[:same]]]).astype(np.float64)
        nearest = pairwise_distances(candidates.numpy().astype(np.float64), centers).min(axis=1)
        nearest[lazy_picks[:same]] = -1.0
        for pick in (lazy_picks[same], dense_picks[same]):
            assert nearest[pick] >= nearest.max() * (1 - 1e-5)


@pytest.mark.parametrize("algorithm", K_CENTER_ALGORITHMS)
def test_k_center_on_an_integer_grid_picks_an_exactly_farthest_point(algorithm):
    # Issue 12: on a grid most distances tie exactly, but the points are centred on their (non-integer) mean in
    # float32, so tied distances can compute a rounding apart and the tie need not go to the lowest position.
    # What the docstring promises instead, checked in exact integer arithmetic: every pick is a farthest one.
    grid = torch.randint(0, 6, (85, 3), generator=torch.Generator().manual_seed(0))
    candidates, labeled = grid[:80], grid[80:]
    selection = k_center_greedy(candidates.float(), labeled.float(), 60, algorithm=algorithm)
    centers, picked = labeled, torch.zeros(len(candidates), dtype=torch.bool)
    for pick, score in zip(selection.positions.tolist(), selection.scores.tolist(), strict=True):
        nearest = ((candidates[:, None] - centers[None]) ** 2).sum(-1).amin(1)  # int64 squared distances
        nearest[picked] = -1
        assert nearest[pick] == nearest.max()
        assert score**2 == pytest.approx(float(nearest[pick]), abs=1e-4)
        centers, picked[pick] = torch.cat([centers, candidates[pick : pick + 1]]), True


GPU_LOOPS = {"k_center_dense": coreset._dense_k_center, "mean_distance": medal._greedy_mean_distance_on_device}


@pytest.mark.parametrize("m", [0, 40])
@pytest.mark.parametrize("loop", sorted(GPU_LOOPS))
def test_gpu_loops_never_read_a_device_value_on_the_host(loop, m):
    # Meta tensors have shapes but no values, so whatever reads one on the host (int(t), t.item(), `if t`, a
    # boolean mask) raises here, where on a GPU it would wait for the device, once per pick.
    x, y, x_sq, y_sq = prepare_points(*random_points(300, m, 8, seed=8), 30, column_major=True)
    meta = [tensor.to("meta") for tensor in (x, x_sq, y, y_sq)]
    positions, scores = GPU_LOOPS[loop](*meta, 30, torch.Generator().manual_seed(0), 64)
    assert positions.shape == scores.shape == (30,)
    # The check has teeth: the lazy algorithm reads values on the host at every pick.
    with pytest.raises((RuntimeError, NotImplementedError)):
        coreset._lazy_k_center(*meta, 30, torch.Generator().manual_seed(0), 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("m", [0, 40])
@pytest.mark.parametrize("method", sorted(GREEDY))
def test_cuda_selection_waits_for_the_device_as_often_for_many_picks_as_for_few(method, m):
    ours, _ = GREEDY[method]
    candidates, labeled = (points.cuda() for points in random_points(2000, m, 16, seed=9))

    def syncs(budget: int) -> int:
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                ours(candidates, labeled, budget, torch.Generator().manual_seed(0))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        # (Not counting the one-off notice that the debug mode is a prototype.)
        return sum("called a synchronizing CUDA operation" in str(warning.message) for warning in caught)

    few, many = syncs(5), syncs(50)
    if method == "k_center_lazy":
        assert many > few > 0, "the lazy algorithm waits at every pick: the count must see it"
    else:
        assert many == few


# ---------------------------------------------------------------------------------------- feature space
def fake_outputs(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Task and VAE features on deliberately different scales, plus a key the feature space must ignore."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "task": torch.rand(n, 12, generator=generator) * 10,
        "vae": torch.randn(n, 4, generator=generator) * 0.1,
        "index": torch.arange(n),
    }


def vae_space(alpha: float = 1.0, normalize: bool = False, task_weight: float = 1.0) -> FeatureSpace:
    """A feature space with VAE features of an (unread) checkpoint: ``combine`` needs only the settings."""
    return FeatureSpace(VAEFeatures("vae.ckpt", alpha=alpha, normalize=normalize), task_weight=task_weight)


def hand_made_features(
    candidates: dict, labeled: dict, alpha: float, normalize: bool, vae: bool
) -> tuple[np.ndarray, np.ndarray]:
    blocks = {"task": 1.0, "vae": alpha} if vae else {"task": 1.0}
    cand_parts, lab_parts = [], []
    for key, weight in blocks.items():
        cand, lab = candidates[key].double().numpy(), labeled[key].double().numpy()
        if normalize:
            weight = weight / np.linalg.norm(np.concatenate([cand, lab]), axis=1).mean()
        cand_parts.append(weight * cand)
        lab_parts.append(weight * lab)
    return np.concatenate(cand_parts, axis=1), np.concatenate(lab_parts, axis=1)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize(("vae", "alpha"), [(False, 1.0), (True, 1.0), (True, 0.3), (True, 25.0)])
def test_combine_concatenates_task_and_scaled_vae_features(vae, alpha, normalize):
    candidates, labeled = fake_outputs(50, seed=0), fake_outputs(20, seed=1)
    space = vae_space(alpha, normalize) if vae else FeatureSpace()
    points, labeled_points = space.combine(candidates, labeled)
    # Normalisation is a setting of the VAE features: the task features alone are never rescaled.
    expected_points, expected_labeled = hand_made_features(candidates, labeled, alpha, normalize and vae, vae)
    assert points.dtype == torch.float32
    np.testing.assert_allclose(points.numpy(), expected_points, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(labeled_points.numpy(), expected_labeled, rtol=1e-5, atol=1e-6)


def test_normalize_makes_alpha_independent_of_feature_scale():
    candidates, labeled = fake_outputs(50, seed=0), fake_outputs(20, seed=1)
    rescaled = {key: value * 1000 if key == "vae" else value for key, value in candidates.items()}
    rescaled_labeled = {key: value * 1000 if key == "vae" else value for key, value in labeled.items()}
    space = vae_space(alpha=0.5, normalize=True)
    torch.testing.assert_close(space.combine(candidates, labeled), space.combine(rescaled, rescaled_labeled))


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("heuristic_class", [CoreSet, MedAL])
def test_heuristic_select_equals_brute_force_on_vae_augmented_features(heuristic_class, normalize):
    candidates, labeled = fake_outputs(400, seed=2), fake_outputs(60, seed=3)
    space = vae_space(alpha=3.0, normalize=normalize)
    heuristic = heuristic_class(features=space, chunk_size=50)
    assert heuristic.uses_labeled
    selection = heuristic.select(candidates, labeled, 30, torch.Generator().manual_seed(0))
    brute_force = brute_force_k_center if heuristic_class is CoreSet else brute_force_mean_distance
    points, labeled_points = hand_made_features(candidates, labeled, 3.0, normalize, vae=True)
    assert selection.positions.tolist() == brute_force(points, labeled_points, 30, first=-1)[0]


@pytest.mark.parametrize("heuristic_class", [CoreSet, MedAL])
def test_heuristic_select_with_an_empty_labeled_set(heuristic_class):
    candidates = fake_outputs(100, seed=4)
    heuristic = heuristic_class()
    first = heuristic.select(candidates, {}, 10, torch.Generator().manual_seed(7))
    again = heuristic.select(candidates, {}, 10, torch.Generator().manual_seed(7))
    assert first.positions.tolist() == again.positions.tolist()
    brute_force = brute_force_k_center if heuristic_class is CoreSet else brute_force_mean_distance
    expected, _ = brute_force(candidates["task"].numpy(), np.zeros((0, 12)), 10, int(first.positions[0]))
    assert first.positions.tolist() == expected


def test_combine_rejects_outputs_it_cannot_use():
    space = vae_space()
    outputs = fake_outputs(10, seed=0)
    with pytest.raises(ValueError, match="candidate outputs lack 'vae'"):
        space.combine({"task": outputs["task"]}, {})
    with pytest.raises(ValueError, match="'task' features are 12-d for candidates but 3-d labeled"):
        space.combine(outputs, {"task": torch.ones(2, 3), "vae": torch.ones(2, 4)})
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        VAEFeatures("vae.ckpt", alpha=-1.0)


class FakeOutputs(NamedTuple):
    logits: torch.Tensor
    embedding: torch.Tensor
    blocks: tuple


class FakeTaskModel:
    def forward_features(self, images: torch.Tensor) -> FakeOutputs:
        flat = images.float().flatten(1)
        return FakeOutputs(flat[:, :2], flat[:, :512], ())


class FakeVAE:
    num_channels, image_size, latent_dim = 3, 16, 6

    def encode_mean(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mean(dim=(1, 2, 3))[:, None].repeat(1, 6)


def tiny_data(channels: int, size: int) -> ImageData:
    def split(n: int) -> ImageSplit:
        return ImageSplit(torch.zeros(n, channels, size, size, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64))

    return ImageData(split(4), split(2), split(2), "multiclass", ("a", "b"))


def test_setup_loads_the_vae_for_the_data_shape_and_embed_returns_both_blocks(monkeypatch):
    calls = []

    def fake_load(path: str, num_channels: int, image_size: int) -> FakeVAE:
        calls.append((path, num_channels, image_size))
        return FakeVAE()

    monkeypatch.setattr("alvae_pl.models.vae_features.load_vae_encoder", fake_load)
    space = FeatureSpace(VAEFeatures("runs/vae.ckpt", alpha=2.0))
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="must be called first"):
        space.embed(FakeTaskModel(), images)
    space.setup(tiny_data(3, 16), torch.device("cpu"))
    assert calls == [("runs/vae.ckpt", 3, 16)]
    space.setup(tiny_data(3, 16), torch.device("cpu"))  # read once, however often set up
    assert len(calls) == 1
    with pytest.raises(ValueError, match="encodes 3-channel 16x16 images; the data's are 1-channel 16x16"):
        space.setup(tiny_data(1, 16), torch.device("cpu"))
    outputs = CoreSet(features=space).embed(FakeTaskModel(), images)
    assert {key: list(value.shape) for key, value in outputs.items()} == {"task": [5, 512], "vae": [5, 6]}
    # Without a checkpoint nothing is loaded and only the task block is produced.
    FeatureSpace().setup(tiny_data(3, 16), torch.device("cpu"))
    assert len(calls) == 1
    assert list(MedAL().embed(FakeTaskModel(), images)) == ["task"]


# ------------------------------------------------------------------------------------------------ memory
# Peak growth of the probe's own process (see tests.helpers.memory_probe).
MEMORY_PROBE = """
import sys, torch
from alvae_pl.acquisition.coreset import k_center_greedy
from alvae_pl.acquisition.medal import greedy_mean_distance

torch.set_num_threads(1)
generator = torch.Generator().manual_seed(0)
candidates = torch.rand(20_000, 16, generator=generator)
labeled = torch.rand(4_000, 16, generator=generator)
k_center_greedy(candidates[:100], labeled[:100], 2)  # warm up allocator and kernels
for select in (k_center_greedy, greedy_mean_distance):
    before = peak_kib()
    select(candidates, labeled, 300, chunk_size=1024)
    print((peak_kib() - before) / 1024)  # KiB -> MiB
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")
def test_selection_memory_stays_far_below_pairwise_matrices():
    # n x n float32 would be 1526 MiB and n x m 305 MiB; chunked blocks are 4 MiB and the centred copy 1.2 MiB.
    peak_growth_mib = run_memory_probe(textwrap.dedent(MEMORY_PROBE))
    assert len(peak_growth_mib) == 2
    assert max(peak_growth_mib) < 64, f"peak memory grew by {peak_growth_mib} MiB"


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("heuristic_class", [CoreSet, MedAL])
def test_task_weight_zero_selects_on_the_vae_features_alone(heuristic_class, normalize):
    candidates, labeled = fake_outputs(400, seed=2), fake_outputs(60, seed=3)
    space = vae_space(alpha=2.0, normalize=normalize, task_weight=0.0)
    without_task = ({"vae": candidates["vae"]}, {"vae": labeled["vae"]})
    points, labeled_points = space.combine(*without_task)  # the task block is neither needed nor used
    assert points.shape == candidates["vae"].shape
    torch.testing.assert_close(space.combine(candidates, labeled), (points, labeled_points))
    selection = heuristic_class(features=space, chunk_size=50).select(*without_task, 30, torch.Generator())
    # Distances scale with alpha (and the normalisation), so the picks are those on V(u) alone.
    brute_force = brute_force_k_center if heuristic_class is CoreSet else brute_force_mean_distance
    vae_points, vae_labeled = candidates["vae"].double().numpy(), labeled["vae"].double().numpy()
    assert selection.positions.tolist() == brute_force(vae_points, vae_labeled, 30, first=-1)[0]


def test_task_weight_is_checked():
    with pytest.raises(ValueError, match="task_weight 0 leaves no features: give the feature space a vae"):
        FeatureSpace(task_weight=0.0)
    with pytest.raises(ValueError, match="task_weight must be a finite number >= 0"):
        vae_space(task_weight=-1.0)
