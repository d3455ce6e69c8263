"""BALD and BADGE against numpy references and autograd, and one active-learning round of each through the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alvae_pl.acquisition.badge import BADGE, GradientEmbeddings, gradient_scale, kmeans_plus_plus
from alvae_pl.acquisition.bald import BALD, mutual_information
from alvae_pl.models.task_model import TaskModel
from tests.helpers.cli_runs import first_acquisition
from tests.helpers.cli_runs import overlay as overlay_arguments
from tests.helpers.memory_probe import run_memory_probe


# ---------------------------------------------------------------------------------------------------------- BALD
def numpy_mutual_information(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    """``[N]`` from ``[T, N, K]``, written out with probabilities in float64."""
    logits = logits.astype(np.float64)

    def entropy(p: np.ndarray) -> np.ndarray:  # over the last axis, 0 log 0 = 0
        return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=-1)

    if multilabel:
        p = 1 / (1 + np.exp(-logits))
        two_way = np.stack([p, 1 - p], axis=-1)  # [T, N, K, 2]: each finding as a 2-class prediction
        per_finding = entropy(two_way.mean(axis=0)) - entropy(two_way).mean(axis=0)  # [N, K]
        return per_finding.sum(axis=1)
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return entropy(p.mean(axis=0)) - entropy(p).mean(axis=0)


@pytest.mark.parametrize("multilabel", [False, True])
def test_bald_mutual_information_equals_the_numpy_reference(multilabel: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 30, 4, generator=generator) * 3
    logits[:, 0] = logits[0, 0]  # every pass agrees: no information about the weights
    logits[:, 1] = torch.tensor([40.0, -40.0, 0.0, 0.0]).repeat(7, 1)  # saturated findings stay finite
    logits[:, 2, :] = torch.tensor([[30.0, -30.0, -30.0, -30.0], [-30.0, 30.0, -30.0, -30.0]]).repeat(4, 1)[:7]
    score = mutual_information(logits, multilabel)
    np.testing.assert_allclose(score.numpy(), numpy_mutual_information(logits.numpy(), multilabel), atol=2e-6)
    assert score[0] == pytest.approx(0.0, abs=1e-6)
    # Confident passes that disagree (row 2) carry close to the most information there is: log 2 for two classes.
    assert score[2] > 0.6 and score.isfinite().all() and (score >= 0).all()


def test_bald_scores_do_not_depend_on_batching_and_repeat_with_the_round_generator() -> None:
    model = TaskModel(num_classes=10, num_channels=1, image_size=28, dropout=0.5).eval()
    images = torch.randint(0, 256, (12, 1, 28, 28), dtype=torch.uint8)

    def scores(batches: list[slice], seed: int) -> torch.Tensor:
        bald = BALD(mc_samples=8)
        bald.start_acquisition(torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return torch.cat([bald.embed(model, images[part])["mutual_information"] for part in batches])

    whole = scores([slice(0, 12)], seed=1)
    assert torch.allclose(whole, scores([slice(0, 5), slice(5, 12)], seed=1), atol=1e-6)  # another DDP shard split
    assert not torch.allclose(whole, scores([slice(0, 12)], seed=2))  # another round: other masks
    bald = BALD(mc_samples=400)
    bald.start_acquisition(torch.Generator().manual_seed(0))
    masks = bald.dropout_masks(0.3, 512, torch.device("cpu"))
    assert masks.unique().tolist() == [0.0, pytest.approx(1 / 0.7)]
    assert (masks > 0).float().mean().item() == pytest.approx(0.7, abs=0.01)


def test_bald_refuses_a_model_without_dropout() -> None:
    with pytest.raises(ValueError, match=r"model.init_args.dropout"):
        BALD().check_model(TaskModel(num_classes=10, num_channels=1))


def test_dropout_is_active_in_training_only_and_off_by_default() -> None:
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    plain, dropped = TaskModel(num_channels=1), TaskModel(num_channels=1, dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.equal(plain.eval()(images), dropped.eval()(images))
        plain.train(), dropped.train()
        assert torch.equal(plain(images), plain(images))  # batch norm in train mode, but no randomness
        assert not torch.equal(dropped(images), dropped(images))


# --------------------------------------------------------------------------------------------------------- BADGE
@pytest.mark.parametrize("multilabel", [False, True])
def test_gradient_embedding_is_the_last_layer_gradient_under_the_predicted_label(multilabel: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    features = torch.randn(5, 6, generator=generator)
    logits = layer(features)
    if multilabel:
        targets = (logits > 0).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    else:
        loss = torch.nn.functional.cross_entropy(logits, logits.argmax(dim=1), reduction="sum")
    scale = gradient_scale(logits.detach(), multilabel)
    (gradient,) = torch.autograd.grad(loss, layer.weight)  # [K, D]: summed over the images
    per_image = []
    for row in range(5):
        row_logits = layer(features[row : row + 1])
        if multilabel:
            row_loss = torch.nn.functional.binary_cross_entropy_with_logits(
                row_logits, (row_logits > 0).float(), reduction="sum"
            )
        else:
            row_loss = torch.nn.functional.cross_entropy(row_logits, row_logits.argmax(dim=1))
        per_image.append(torch.autograd.grad(row_loss, layer.weight)[0])
    for row in range(5):
        torch.testing.assert_close(torch.outer(scale[row], features[row]), per_image[row], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sum(per_image), gradient, atol=1e-5, rtol=1e-5)


def brute_force_kmeans_plus_plus(embeddings: np.ndarray, budget: int, seed: int) -> tuple[list[int], list[float]]:
    """k-means++ on explicit float64 embeddings ``[n, d]``: the longest first, then D^2 sampling with the same
    uniform numbers (the first ``budget`` of ``torch.rand`` from ``seed``) and the same inverse-CDF rule."""
    uniforms = torch.rand(budget, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    norms = (embeddings**2).sum(axis=1)
    chosen = [int(np.argmax(norms))]
    scores = [float(norms[chosen[0]])]
    nearest = ((embeddings - embeddings[chosen[0]]) ** 2).sum(axis=1)
    for pick in range(1, budget):
        weights = nearest.copy()
        weights[chosen] = 0
        cumulative = np.cumsum(weights)
        row = int(np.searchsorted(cumulative, uniforms[pick] * cumulative[-1], side="right"))
        chosen.append(row)
        scores.append(float(weights[row]))
        nearest = np.minimum(nearest, ((embeddings - embeddings[row]) ** 2).sum(axis=1))
    return chosen, scores


@pytest.mark.parametrize("multilabel", [False, True])
def test_badge_picks_what_brute_force_kmeans_plus_plus_picks(multilabel: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    logits, embedding = torch.randn(300, 5, generator=generator) * 2, torch.randn(300, 16, generator=generator).relu()
    scale = gradient_scale(logits, multilabel)
    explicit = (scale[:, :, None] * embedding[:, None, :]).reshape(300, -1).double().numpy()  # [n, K * D]
    expected, expected_scores = brute_force_kmeans_plus_plus(explicit, 40, seed=11)
    candidates = {"gradient_scale": scale, "embedding": embedding, "index": torch.arange(300)}
    selection = BADGE().select(candidates, {}, 40, torch.Generator().manual_seed(11))
    assert selection.positions.tolist() == expected
    np.testing.assert_allclose(selection.scores.numpy(), expected_scores, rtol=1e-4, atol=1e-6)


def test_kmeans_plus_plus_picks_distinct_rows_when_every_row_coincides() -> None:
    points = GradientEmbeddings(torch.ones(6, 2), torch.ones(6, 3))
    selection = kmeans_plus_plus(points, 6, torch.Generator().manual_seed(0))
    assert sorted(selection.positions.tolist()) == list(range(6))
    assert selection.positions[0] == 0 and torch.equal(selection.scores[1:], torch.zeros(5))


# --------------------------------------------------------------------------------------------------- through CLI
@pytest.mark.parametrize("overlay", ["bald.yaml", "badge.yaml"])
def test_one_round_through_the_cli_labels_the_budget(tmp_path: Path, overlay: str) -> None:
    labeled, scores = first_acquisition(tmp_path, "digits_entropy.yaml", *overlay_arguments(overlay))
    assert len({row["pool_index"] for row in labeled}) == 120 and len(scores) == 60
    assert all(s >= 0 for s in scores) and sum(s > 0 for s in scores) > 50
    if overlay == "bald.yaml":
        assert scores == sorted(scores, reverse=True)


# Peak growth of the probe's own process (see tests.helpers.memory_probe).
BADGE_MEMORY_PROBE = """
import torch
from alvae_pl.acquisition.badge import GradientEmbeddings, kmeans_plus_plus
torch.set_num_threads(1)
generator = torch.Generator().manual_seed(0)
points = GradientEmbeddings(torch.randn(20_000, 4, generator=generator), torch.randn(20_000, 8, generator=generator))
kmeans_plus_plus(points, 20, torch.Generator().manual_seed(0))  # warm up allocator and kernels
before = peak_kib()
kmeans_plus_plus(points, 600, torch.Generator().manual_seed(0))
print((peak_kib() - before) / 1024)  # KiB -> MiB
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")
def test_kmeans_plus_plus_memory_does_not_grow_with_the_number_of_picks() -> None:
    # Keeping one [n] float64 vector per pick alive would hold 600 x 20,000 x 8 bytes = 92 MiB; the features are
    # 0.9 MiB and the loop's own vectors a few [n] each (0.2 MiB apiece).
    growth_mib = run_memory_probe(BADGE_MEMORY_PROBE)[-1]
    assert growth_mib < 16, f"peak memory grew by {growth_mib} MiB over 600 picks"
