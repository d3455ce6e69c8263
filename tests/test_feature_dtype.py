"""Features kept in float16 / bfloat16 (``feature_dtype``): the same picks as float32, in half the memory."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import pairwise_distances

from alvae_pl.acquisition import BADGE, CoreSet, MedAL
from alvae_pl.acquisition.badge import GradientEmbeddings, kmeans_plus_plus
from alvae_pl.acquisition.coreset import k_center_greedy
from alvae_pl.acquisition.distances import prepare_points
from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.acquisition.medal import greedy_mean_distance
from alvae_pl.callbacks.sharded_inference import sharded_inference
from tests.helpers.cli_runs import first_acquisition
from tests.helpers.memory_probe import run_memory_probe
from tests.test_coreset_medal import clustered_points

GREEDY = {
    "k_center_lazy": partial(k_center_greedy, algorithm="lazy"),
    "k_center_dense": partial(k_center_greedy, algorithm="dense"),
    "mean_distance": greedy_mean_distance,
}
LOW = [torch.float16, torch.bfloat16]


def symmetric_grid(n: int, m: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer points in ``[0, 16]`` together with their mirror images about 8, shuffled: the mean is exactly 8 in
    every coordinate, so the centred points are small integers, exact in float16 and bfloat16, and every distance is
    exact in float32. Whatever the storage, the selections then compute the very same numbers (ties included)."""
    generator = torch.Generator().manual_seed(seed)
    half = torch.randint(0, 17, ((n + m) // 2, dim), generator=generator).float()
    points = torch.cat([half, 16 - half])[torch.randperm(n + m, generator=generator)]
    return points[:n], points[n:]


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("method", sorted(GREEDY))
@pytest.mark.parametrize("m", [0, 30])
def test_low_precision_picks_and_scores_equal_float32_when_the_features_are_exact(method, dtype, m):
    candidates, labeled = symmetric_grid(300, m, 12, seed=m)
    expected = GREEDY[method](candidates, labeled, 60, torch.Generator().manual_seed(1), chunk_size=64)
    low = GREEDY[method](candidates.to(dtype), labeled.to(dtype), 60, torch.Generator().manual_seed(1), chunk_size=64)
    assert low.positions.tolist() == expected.positions.tolist()
    assert torch.equal(low.scores, expected.scores)


@pytest.mark.parametrize("dtype", LOW)
def test_badge_low_precision_picks_equal_float32_when_the_factors_are_exact(dtype):
    generator = torch.Generator().manual_seed(0)
    scale, embedding = (
        torch.randint(-4, 5, (400, 5), generator=generator),
        torch.randint(0, 9, (400, 16), generator=generator),
    )
    expected = kmeans_plus_plus(
        GradientEmbeddings(scale.float(), embedding.float()), 50, torch.Generator().manual_seed(2)
    )
    points = GradientEmbeddings(scale.to(dtype), embedding.to(dtype))
    assert points.scale.dtype == points.embedding.dtype == dtype  # kept, not upcast whole
    low = kmeans_plus_plus(points, 50, torch.Generator().manual_seed(2))
    assert low.positions.tolist() == expected.positions.tolist()
    assert torch.equal(low.scores, expected.scores)


@pytest.mark.parametrize("method", sorted(GREEDY))
def test_float16_picks_are_the_best_up_to_float16_rounding_on_real_valued_features(method):
    """Real-valued features: float16 rounds them (relative 5e-4), which may swap near-tied candidates but never picks
    a clearly worse one. Each pick's exact (float64, unrounded features) score, given the picks made before it, is
    within 0.5% of the best one's; and most picks are the float32 ones."""
    candidates, labeled = clustered_points(400, 40, 24, seed=5)
    budget = 40
    low = GREEDY[method](candidates.half(), labeled.half(), budget, torch.Generator().manual_seed(0))
    expected = GREEDY[method](candidates, labeled, budget, torch.Generator().manual_seed(0))
    points, members = candidates.double().numpy(), [row for row in labeled.double().numpy()]
    picks = low.positions.tolist()
    for i, pick in enumerate(picks):
        distances = pairwise_distances(points, np.stack(members))
        exact = distances.mean(axis=1) if method == "mean_distance" else distances.min(axis=1)
        exact[picks[:i]] = -np.inf
        assert exact[pick] >= exact.max() * (1 - 5e-3), (i, exact[pick], exact.max())
        members.append(points[pick])
    assert len(set(picks) & set(expected.positions.tolist())) >= budget // 2


def test_combine_and_prepare_keep_the_low_precision():
    """The copies a selection makes (combined points, centred points) are float16 too: half float32's bytes."""
    outputs = {"task": torch.randn(50, 8).half(), "index": torch.arange(50)}
    labeled = {"task": torch.randn(5, 8).half(), "index": torch.arange(5)}
    points, labeled_points = FeatureSpace().combine(outputs, labeled)
    assert points.dtype == labeled_points.dtype == torch.float16
    x, y, x_sq, y_sq = prepare_points(points, labeled_points, 3, column_major=True)
    assert x.dtype == y.dtype == torch.float16 and x_sq.dtype == y_sq.dtype == torch.float32
    reference, *_ = prepare_points(points.float(), labeled_points.float(), 3)
    assert x.untyped_storage().nbytes() * 2 == reference.untyped_storage().nbytes()
    torch.testing.assert_close(x.float(), reference, rtol=0, atol=2e-3)


# Peak growth of the probe's own process (see tests.helpers.memory_probe).
MEMORY_PROBE = """
import sys, torch
from alvae_pl.acquisition.coreset import k_center_greedy
from alvae_pl.acquisition.medal import greedy_mean_distance
torch.set_num_threads(1)
dtype, method = getattr(torch, sys.argv[1]), sys.argv[2]
generator = torch.Generator().manual_seed(0)
candidates = torch.empty(400_000, 32, dtype=dtype)  # 49 MiB in float32, filled in chunks: no bigger temporary
for start in range(0, len(candidates), 10_000):
    candidates[start : start + 10_000] = torch.rand(10_000, 32, generator=generator)
labeled = torch.rand(20, 32, generator=generator).to(dtype)
if method == "coreset":
    def select(candidates, labeled, budget):
        return k_center_greedy(candidates, labeled, budget, algorithm="dense")
else:
    select = greedy_mean_distance
select(candidates[:1000], labeled, 2)  # warm up allocator and kernels
before = peak_kib()
select(candidates, labeled, 5)
print((peak_kib() - before) / 1024)  # KiB -> MiB
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")
@pytest.mark.parametrize("method", ["coreset", "medal"])
def test_float16_selection_takes_about_half_the_memory(method):
    growth = {}
    for dtype in ("float32", "float16"):
        growth[dtype] = run_memory_probe(MEMORY_PROBE, dtype, method)[-1]
    # float32: the 49 MiB centred copy and a few [n] vectors (1.5 MiB each); float16: a 24 MiB copy, the same
    # vectors and two 4 MiB upcast chunks. (Upcasting float16 features whole, as before, grew by 98 MiB.)
    assert growth["float32"] > 45 and growth["float16"] < growth["float32"] / 2 + 16, growth


def test_feature_dtype_is_checked_and_reaches_the_heuristics():
    assert CoreSet(feature_dtype="bfloat16").feature_dtype == torch.bfloat16
    assert MedAL().feature_dtype == BADGE().feature_dtype == torch.float32
    assert BADGE(feature_dtype="float16").feature_dtype == torch.float16
    with pytest.raises(ValueError, match="feature_dtype must be one of"):
        CoreSet(feature_dtype="float8")


def test_float16_features_overflowing_raise_one_clear_error():
    candidates = torch.full((10, 4), 60000.0).half()
    candidates[0] = -60000.0  # centred: 60000 - (-48000) overflows float16
    with pytest.raises(ValueError, match="float16 holds at most 65504"):
        k_center_greedy(candidates, candidates[:0], 2)


def test_sharded_inference_gathers_floating_outputs_in_the_asked_precision():
    import lightning as L

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    module = L.LightningModule()
    features = torch.randn(10, 6)

    def compute(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": features[rows], "label": rows}

    outputs = sharded_inference(trainer, module, 10, compute, batch_size=4, description="", dtype=torch.float16)
    assert outputs["features"].dtype == torch.float16 and outputs["label"].dtype == torch.int64
    assert torch.equal(outputs["features"], features.half()) and torch.equal(outputs["label"], torch.arange(10))


@pytest.mark.slow
def test_float16_core_set_through_the_cli_labels_what_float32_labels_but_near_ties(tmp_path: Path) -> None:
    """One round of core-set on digits with the features gathered in float16, against the same run in float32: the
    trained network's features have near-ties that float16 rounding may swap, so most picks, not all, coincide."""
    labeled, scores = first_acquisition(tmp_path / "float32", "digits_coreset.yaml")
    low_labeled, low_scores = first_acquisition(
        tmp_path / "float16", "digits_coreset.yaml", "--active.heuristic.init_args.feature_dtype=float16"
    )
    picks = [row["pool_index"] for row in labeled if row["round"] == "1"]
    low_picks = [row["pool_index"] for row in low_labeled if row["round"] == "1"]
    assert len(set(low_picks)) == len(low_picks) == 60
    assert len(set(low_picks) & set(picks)) >= 40 and low_picks[:3] == picks[:3]
    torch.testing.assert_close(torch.tensor(low_scores).max(), torch.tensor(scores).max(), rtol=2e-3, atol=0)
