"""Margin and least confidence against numpy references, and one active-learning round of each through the CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from alvae_pl.acquisition.least_confidence import LeastConfidence, prediction_confidence
from alvae_pl.acquisition.margin import Margin, prediction_margin
from tests.helpers.cli_runs import first_acquisition


def joint_label_probabilities(logits: np.ndarray) -> np.ndarray:
    """``[N, 2^K]``: the probability of every 0/1 vector over K independent findings, by enumeration."""
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    labels = np.array(list(itertools.product([0, 1], repeat=logits.shape[1])))  # [2^K, K]
    return np.prod(np.where(labels[None], p[:, None], 1 - p[:, None]), axis=2)


def logits_with_ties_and_saturation(findings: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(40, findings, generator=generator) * 3
    logits[0] = 30.0  # saturated: certain of every finding
    logits[1] = 0.0  # as unsure as can be
    return logits


@pytest.mark.parametrize("multilabel", [False, True])
def test_margin_and_confidence_equal_the_numpy_references(multilabel: bool) -> None:
    logits = logits_with_ties_and_saturation(4)
    if multilabel:
        ranked = np.sort(joint_label_probabilities(logits.numpy()), axis=1)[:, ::-1]
    else:
        ranked = np.sort(torch.softmax(logits.double(), dim=1).numpy(), axis=1)[:, ::-1]
    margin = prediction_margin(logits, multilabel).numpy()
    confidence = prediction_confidence(logits, multilabel).numpy()
    np.testing.assert_allclose(margin, ranked[:, 0] - ranked[:, 1], atol=1e-6)
    np.testing.assert_allclose(confidence, ranked[:, 0], atol=1e-6)
    if multilabel:
        assert margin[0] == pytest.approx(1.0) and confidence[0] == pytest.approx(1.0)  # saturated, no NaN
        assert margin[1] == pytest.approx(0.0) and confidence[1] == pytest.approx(1 / 16)


@pytest.mark.parametrize(("heuristic", "key"), [(Margin(), "margin"), (LeastConfidence(), "confidence")])
def test_the_least_certain_images_are_picked_first(heuristic, key: str) -> None:
    values = torch.tensor([0.9, 0.2, 0.5, 0.2, 0.7])
    selection = heuristic.select({key: values, "index": torch.arange(5)}, {}, 3, torch.Generator())
    assert selection.positions.tolist() == [1, 3, 2]  # smallest first; the tie goes to the lower position
    assert torch.allclose(selection.scores, 1 - values[[1, 3, 2]])


@pytest.mark.parametrize("name", ["Margin", "LeastConfidence"])
def test_one_round_through_the_cli_labels_the_budget_by_its_short_name(tmp_path: Path, name: str) -> None:
    labeled, scores = first_acquisition(tmp_path, "digits_entropy.yaml", f"--active.heuristic={name}")
    assert len({row["pool_index"] for row in labeled}) == 120 and len(scores) == 60
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
