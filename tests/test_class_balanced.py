"""Class-balanced selection (ClassBalanced): equal quotas over predicted classes, on a long-tailed digits pool against
the unbalanced heuristics, and through train.py (records, per-class metrics, resume)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn

from alvae_pl.acquisition import ClassBalanced, CoreSet, Entropy, RandomSampling
from alvae_pl.acquisition.class_balanced import (
    PROBABILITIES_KEY,
    balanced_quotas,
    labeled_group_counts,
    predicted_groups,
)
from alvae_pl.acquisition.entropy import prediction_entropy
from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.callbacks.label_aware_retraining import find_label_aware
from alvae_pl.data.sources import DigitsSource
from alvae_pl.models.label_aware_features import LabelAwareVAEFeatures
from tests.helpers.cli_runs import kill_switch_config, overlay, read_csv, train, train_in_process, without_timings

#: ClassBalanced(CoreSet) on a long-tailed digits pool (the rarest digit ten times rarer than the most common).
BALANCED_CORESET = [*overlay("class_balanced_coreset.yaml"), "--data.source.init_args.imbalance_ratio=10"]


def round_robin_quotas(available: list[int], order: list[int], budget: int) -> list[int]:
    """The reference: one pick at a time, to the next group in ``order`` that has a candidate left."""
    quotas = [0] * len(available)
    while budget:
        for group in order:
            if budget and quotas[group] < available[group]:
                quotas[group] += 1
                budget -= 1
    return quotas


def test_quotas_are_equal_and_small_groups_pass_on_what_they_cannot_take() -> None:
    # Group 0 has 2 candidates: its share goes to the others; the remainder of 11 / 2 goes to group 1, served first.
    assert balanced_quotas(torch.tensor([2, 10, 10]), torch.tensor([0, 1, 2]), 13).tolist() == [2, 6, 5]
    assert balanced_quotas(torch.tensor([2, 10, 10]), torch.tensor([2, 1, 0]), 13).tolist() == [2, 5, 6]
    generator = np.random.default_rng(0)
    for _ in range(200):
        groups = int(generator.integers(1, 15))
        available = generator.integers(0, 40, size=groups)
        available[0] += 1
        order = generator.permutation(groups)
        budget = int(generator.integers(1, available.sum() + 1))
        quotas = balanced_quotas(torch.as_tensor(available), torch.as_tensor(order), budget)
        assert quotas.tolist() == round_robin_quotas(available.tolist(), order.tolist(), budget)
    with pytest.raises(ValueError, match="exceeds"):
        balanced_quotas(torch.tensor([1, 1]), torch.tensor([0, 1]), 3)


def test_multilabel_groups_follow_each_finding_against_its_labeled_rate() -> None:
    # 100 labeled images: finding 0 in 49 (rate 50/102), finding 1 in 1 (rate 2/102); 50 with no finding.
    targets = torch.zeros(100, 2, dtype=torch.int64)
    targets[:49, 0] = 1
    targets[49, 1] = 1
    counts = labeled_group_counts(targets, 2)
    assert counts.tolist() == [49, 1, 50]
    probabilities = torch.tensor([[0.9, 0.01], [0.6, 0.05], [0.1, 0.01], [0.3, 0.001]])
    groups = predicted_groups(probabilities, True, counts, 100)
    # 0.9 / (50/102) = 1.84 > 0.01 / (2/102) = 0.51; 0.05 / (2/102) = 2.55 beats 0.6 / (50/102) = 1.22 (a rare
    # finding's hint wins); below both rates: "no finding" (group 2).
    assert groups.tolist() == [0, 1, 2, 2]
    # Multi-class: the argmax; unknown targets (-1) count nowhere.
    assert labeled_group_counts(torch.tensor([0, 2, 2, -1]), 3).tolist() == [1, 0, 2]
    assert predicted_groups(torch.tensor([[0.2, 0.8], [0.5, 0.5]]), False, torch.zeros(2), 0).tolist() == [1, 0]


def test_select_takes_each_predicted_class_quota_of_the_inner_heuristic_rarest_first() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 4, generator=generator) * 2
    logits[:200, 0] += 4  # class 0 predicted for most candidates
    candidates = {
        "entropy": prediction_entropy(logits, multilabel=False),
        PROBABILITIES_KEY: logits.softmax(dim=1),
        "index": torch.arange(300),
    }
    labeled = {"index": torch.arange(300, 310), "target": torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])}
    selection = ClassBalanced(Entropy()).select(candidates, labeled, 22, torch.Generator())
    predicted = logits.argmax(dim=1)
    # Classes served rarest first: 3, 2, 1, 0; quotas 6, 6, 5, 5 (as far as each class has candidates).
    available = torch.bincount(predicted, minlength=4)
    quotas = round_robin_quotas(available.tolist(), [3, 2, 1, 0], 22)
    expected = []
    for group in (3, 2, 1, 0):
        rows = torch.nonzero(predicted == group).flatten()
        order = torch.sort(-candidates["entropy"][rows], stable=True).indices
        expected += rows[order[: quotas[group]]].tolist()
    assert selection.positions.tolist() == expected
    assert selection.scores.tolist() == pytest.approx(candidates["entropy"][expected].tolist())
    assert torch.bincount(predicted[selection.positions], minlength=4).tolist() == quotas
    with pytest.raises(ValueError, match="targets"):
        ClassBalanced(Entropy()).select(candidates, {"index": labeled["index"]}, 4, torch.Generator())


def test_multilabel_batches_serve_the_rarest_finding_first_and_keep_a_no_finding_share() -> None:
    # Labeled: finding 0 in 30 images, finding 1 in 10, finding 2 in 2, no finding in 58.
    targets = torch.zeros(100, 3, dtype=torch.int64)
    targets[:30, 0], targets[30:40, 1], targets[40:42, 2] = 1, 1, 1
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 3, generator=generator) - 1.5
    candidates = {
        "entropy": prediction_entropy(logits, multilabel=True),
        PROBABILITIES_KEY: logits.sigmoid(),
        "index": torch.arange(400),
    }
    labeled = {"index": torch.arange(400, 500), "target": targets}
    selection = ClassBalanced(Entropy()).select(candidates, labeled, 30, torch.Generator())
    groups = predicted_groups(logits.sigmoid(), True, torch.tensor([30, 10, 2, 58]), 100)
    available = torch.bincount(groups, minlength=4)
    quotas = round_robin_quotas(available.tolist(), [2, 1, 0, 3], 30)  # finding 2, 1, 0, then "no finding"
    assert torch.bincount(groups[selection.positions], minlength=4).tolist() == quotas
    assert quotas[3] > 0 and groups[selection.positions].tolist() == sorted(
        groups[selection.positions].tolist(), key=[2, 1, 0, 3].index
    )


class PixelClassifier(nn.Module):
    """Multinomial logistic regression on raw pixels (scikit-learn's fit, as a module): a model fitted in a second
    that predicts digits well where it saw enough of them. Its features for core-set are the pixels."""

    task = "multiclass"

    def __init__(self, images: Tensor, targets: Tensor) -> None:
        super().__init__()
        fitted = LogisticRegression(max_iter=2000).fit(self.pixels(images).numpy(), targets.numpy())
        self.linear = nn.Linear(images[0].numel(), 10)
        weight = torch.zeros(10, images[0].numel())
        bias = torch.full((10,), -1e4)  # a digit never labeled is never predicted, as with a trained network
        weight[fitted.classes_] = torch.as_tensor(fitted.coef_, dtype=torch.float32)
        bias[fitted.classes_] = torch.as_tensor(fitted.intercept_, dtype=torch.float32)
        self.linear.weight.data, self.linear.bias.data = weight, bias

    @staticmethod
    def pixels(images: Tensor) -> Tensor:
        return images.flatten(1).float() / 255

    def forward(self, images: Tensor) -> Tensor:
        return self.linear(self.pixels(images))

    def forward_features(self, images: Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self(images), embedding=self.pixels(images))


@pytest.fixture(scope="module")
def long_tailed_pool() -> SimpleNamespace:
    """Digits with digit 9 ten times rarer than digit 0 (8 x 8 pixels), 60 labeled at random, a classifier fitted on
    them, and every remaining image a candidate."""
    data = DigitsSource(image_size=8, imbalance_ratio=10).load()
    images, targets = data.train.images, data.train.targets
    labeled = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:60].sort().values
    unlabeled = torch.tensor(sorted(set(range(len(images))) - set(labeled.tolist())))
    return SimpleNamespace(
        images=images,
        targets=targets,
        labeled=labeled,
        unlabeled=unlabeled,
        model=PixelClassifier(images[labeled], targets[labeled]),
    )


def batch(heuristic, pool: SimpleNamespace, budget: int) -> tuple[Tensor, Tensor]:
    """``budget`` picks as the loop makes them: pool positions ``[budget]`` and their predicted classes."""
    with torch.no_grad():
        outputs = heuristic.embed(pool.model, pool.images[pool.unlabeled])
        labeled = heuristic.embed(pool.model, pool.images[pool.labeled]) if heuristic.uses_labeled else {}
        predicted = pool.model(pool.images[pool.unlabeled]).argmax(dim=1)
    outputs["index"] = pool.unlabeled
    labeled |= {"index": pool.labeled, "target": pool.targets[pool.labeled]}
    selection = heuristic.select(outputs, labeled, budget, torch.Generator().manual_seed(1))
    assert len(selection.positions.unique()) == budget
    return pool.unlabeled[selection.positions], predicted[selection.positions]


@pytest.mark.parametrize("inner", [Entropy, CoreSet, RandomSampling], ids=lambda cls: cls.__name__)
def test_on_a_long_tailed_pool_the_batch_is_balanced_where_the_heuristic_alone_is_lopsided(
    long_tailed_pool: SimpleNamespace, inner: type
) -> None:
    pool = long_tailed_pool
    budget = 50
    picked, predicted = batch(ClassBalanced(inner()), pool, budget)
    alone, predicted_alone = batch(inner(), pool, budget)
    # Every predicted class gets its equal share, as far as it has candidates; the rest goes to the others.
    with torch.no_grad():
        available = torch.bincount(pool.model(pool.images[pool.unlabeled]).argmax(dim=1), minlength=10)
    counts = torch.bincount(predicted, minlength=10)
    rarest_first = torch.sort(torch.bincount(pool.targets[pool.labeled], minlength=10), stable=True).indices
    assert counts.tolist() == round_robin_quotas(available.tolist(), rarest_first.tolist(), budget)
    full = counts[counts < available]  # the groups that could take more: no two differ by more than one
    assert int(full.max() - full.min()) <= 1
    # The unbalanced heuristic's batch follows the pool's long tail (and the model's bias) instead.
    counts_alone = torch.bincount(predicted_alone, minlength=10)
    assert int(counts_alone.max() - counts_alone.min()) > int(counts.max() - counts.min())
    # What a user cares about: more of the rare digits (5-9, 21% of the pool) get labeled.
    rare = lambda positions: int((pool.targets[positions] >= 5).sum())  # noqa: E731
    assert rare(picked) > rare(alone)


def test_the_wrapper_reuses_the_inner_heuristic() -> None:
    assert ClassBalanced(CoreSet()).uses_labeled and not ClassBalanced(Entropy()).uses_labeled
    with pytest.raises(ValueError, match="remove one level"):
        ClassBalanced(ClassBalanced(Entropy()))
    # A label-aware VAE inside the wrapped heuristic is found, so that the loop retrains it every round.
    label_aware = LabelAwareVAEFeatures()
    wrapped = ClassBalanced(CoreSet(FeatureSpace(vae=label_aware)))
    assert find_label_aware(wrapped, nn.Module()) == [label_aware]


def test_a_run_records_per_class_metrics_and_balanced_picks(tmp_path: Path) -> None:
    result = train_in_process(
        "digits_coreset.yaml", tmp_path, *BALANCED_CORESET, "--active.max_labels=120", "--active.epochs_first=1"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "digits_coreset" / "seed_0"
    history = read_csv(run / "history.csv")
    assert [row["labels"] for row in history] == ["60", "120"]
    for row in history:
        for split in ("val", "test"):
            recalls = [float(row[f"{split}_recall_{digit}"]) for digit in range(10)]
            # Balanced validation and test splits: balanced accuracy is the mean recall, and equals accuracy.
            assert float(row[f"{split}_balanced_accuracy"]) == pytest.approx(np.mean(recalls), abs=1e-5)
            assert float(row[f"{split}_balanced_accuracy"]) == pytest.approx(float(row[f"{split}_accuracy"]), abs=0.02)
    labeled = read_csv(run / "labeled.csv")
    assert len({row["pool_index"] for row in labeled}) == 120
    assert sum(row["round"] == "1" for row in labeled) == 60
    events = EventAccumulator(str(run)).Reload()
    assert [event.step for event in events.Scalars("al/val_recall_9")] == [60, 120]
    last = events.Scalars("al/val_balanced_accuracy")[-1].value
    assert last == pytest.approx(float(history[-1]["val_balanced_accuracy"]), abs=1e-4)


def test_a_multilabel_run_balances_over_findings_and_records_each_finding(tmp_path: Path, make_medmnist_npz) -> None:
    data = make_medmnist_npz("chestmnist.npz", sizes=(200, 40, 40), multilabel=True, num_classes=14)
    result = train_in_process(
        "chestmnist_coreset.yaml",
        tmp_path,
        *overlay("class_balanced_entropy.yaml"),
        f"--data.source.init_args.root={data.parent}",
        "--data.source.init_args.download=false",
        "--model.init_args.weights=null",
        "--trainer.devices=1",
        "--data.pool_size=150",
        "--active.max_labels=120",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "chestmnist_coreset" / "seed_0"
    history = read_csv(run / "history.csv")
    assert [row["labels"] for row in history] == ["60", "120"]
    assert len({row["pool_index"] for row in read_csv(run / "labeled.csv")}) == 120
    for row in history:
        # Every finding is present and absent in these splits: the macro AUROC is the mean of the per-finding ones.
        per_finding = [float(value) for key, value in row.items() if key.startswith("val_auroc_")]
        assert len(per_finding) == 14 and "val_auroc_pleural" in row and "test_recall_hernia" in row
        assert float(row["val_auroc"]) == pytest.approx(np.mean(per_finding), abs=1e-5)
        assert 0 <= float(row["val_balanced_accuracy"]) <= 1


@pytest.mark.slow
def test_a_killed_balanced_run_resumes_to_the_uninterrupted_records(tmp_path: Path, reference_run) -> None:
    expected = reference_run("digits_coreset.yaml", *BALANCED_CORESET)
    folder = tmp_path / "killed"
    folder.mkdir()
    # Killed at the end of round one, after its acquisition was written but before the checkpoint was.
    switch = folder / "kill.yaml"
    switch.write_text(kill_switch_config("{at_checkpoint_of_epoch: 1}"))
    killed = train("digits_coreset.yaml", folder, *BALANCED_CORESET, "--config", str(switch), "--ckpt_path=last")
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = train("digits_coreset.yaml", folder, *BALANCED_CORESET, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    actual = folder / "digits_coreset" / "seed_0"
    assert read_csv(actual / "labeled.csv") == read_csv(expected / "labeled.csv")
    history = without_timings(read_csv(actual / "history.csv"))
    assert history == without_timings(read_csv(expected / "history.csv"))
    assert not math.isnan(float(history[-1]["val_recall_9"]))
