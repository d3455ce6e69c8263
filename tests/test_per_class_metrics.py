"""Per-class metrics of a split (balanced accuracy, recall per class, AUROC per finding) against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from alvae_pl.models.per_class_metrics import column_name, per_class_metrics


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # class 3: predicted, never true
def test_multiclass_recall_per_class_and_balanced_accuracy_match_scikit_learn() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 4, generator=generator)
    targets = torch.randint(0, 3, (200,), generator=generator)  # class 3 never occurs: no recall
    logits[targets == 0, 0] += 2  # a model that serves class 0 better than the others
    metrics = per_class_metrics(logits, targets, "multiclass", ("a", "b", "c", "d"))
    predictions = logits.argmax(dim=1).numpy()
    recalls = recall_score(targets.numpy(), predictions, labels=[0, 1, 2], average=None)
    assert [metrics[f"recall_{name}"] for name in "abc"] == pytest.approx(recalls.tolist(), abs=1e-6)
    assert math.isnan(metrics["recall_d"])
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(targets.numpy(), predictions))
    assert list(metrics) == ["balanced_accuracy", "recall_a", "recall_b", "recall_c", "recall_d"]


def test_multilabel_per_finding_recall_auroc_and_balanced_accuracy_match_scikit_learn() -> None:
    generator = torch.Generator().manual_seed(1)
    targets = (torch.rand(150, 3, generator=generator) < 0.3).long()
    targets[:, 2] = 0  # a finding nobody has: recall and AUROC undefined, left out of the mean
    logits = torch.randn(150, 3, generator=generator) + 2 * targets - 1
    metrics = per_class_metrics(logits, targets, "multilabel", ("Pleural thickening", "Mass", "hernia"))
    probabilities = logits.sigmoid().numpy()
    predicted = (probabilities >= 0.5).astype(np.int64)
    y = targets.numpy()
    for finding, name in ((0, "pleural_thickening"), (1, "mass")):
        assert metrics[f"recall_{name}"] == pytest.approx(recall_score(y[:, finding], predicted[:, finding]))
        assert metrics[f"auroc_{name}"] == pytest.approx(roc_auc_score(y[:, finding], probabilities[:, finding]))
    assert math.isnan(metrics["recall_hernia"]) and math.isnan(metrics["auroc_hernia"])
    expected = np.mean([balanced_accuracy_score(y[:, f], predicted[:, f]) for f in (0, 1)])
    assert metrics["balanced_accuracy"] == pytest.approx(expected)


def test_class_names_become_column_names_and_clashes_are_refused() -> None:
    assert column_name("Pleural thickening") == "pleural_thickening"
    assert column_name("0") == "0"
    with pytest.raises(ValueError, match="repeated column names"):
        per_class_metrics(torch.zeros(2, 2), torch.tensor([0, 1]), "multiclass", ("A b", "a-b"))
