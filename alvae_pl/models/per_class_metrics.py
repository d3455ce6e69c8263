"""Per-class metrics of a whole split: does the model serve the rare classes (findings), not only the common ones?

Accuracy and macro AUROC (``metrics.py``) hide a class the model never predicts when the class is rare. These
columns show it: balanced accuracy and each class's recall; for multi-label data each finding's recall and AUROC.
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import Tensor
from torchmetrics.classification import (
    MulticlassRecall,
    MultilabelAUROC,
    MultilabelRecall,
    MultilabelSpecificity,
)

from alvae_pl.data.image_data import TaskKind
from alvae_pl.models.metrics import scores


def column_name(class_name: str) -> str:
    """A class name as a column-name suffix: lower case, every run of other characters than letters and digits
    an underscore (``"Pleural thickening"`` -> ``"pleural_thickening"``)."""
    return re.sub(r"[^0-9a-z]+", "_", class_name.lower()).strip("_") or "class"


def per_class_metrics(
    logits: Tensor, targets: Tensor, task: TaskKind, class_names: tuple[str, ...]
) -> dict[str, float]:
    """Balanced accuracy and per-class recall (and, multi-label, per-finding AUROC) of a whole split.

    Multi-class: ``recall_<class>`` is the fraction of the class's images predicted as it (argmax), and
    ``balanced_accuracy`` their mean, as scikit-learn's ``balanced_accuracy_score`` defines it. Multi-label, at
    probability threshold 0.5 (the threshold of accuracy): ``recall_<finding>`` is the finding's sensitivity,
    ``auroc_<finding>`` its AUROC, and ``balanced_accuracy`` the mean over findings of (sensitivity + specificity)
    / 2, i.e. of each finding's binary balanced accuracy. A class without positive images in the split has no
    recall (NaN, an empty cell) and is left out of the mean, as is a finding without negative images from its
    AUROC (NaN).

    Args:
        logits: float ``[N, K]``.
        targets: int64 ``[N]`` class indices or ``[N, K]`` 0/1 findings.
        task: ``"multiclass"`` or ``"multilabel"``.
        class_names: ``K`` names; each becomes a column suffix through :func:`column_name`.

    Returns:
        ``{"balanced_accuracy": float, "recall_<name>": float, ...}`` (plus ``"auroc_<name>"`` multi-label), in
        class order.
    """
    num_classes = len(class_names)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"logits must be [N, {num_classes}] for {num_classes} classes, got {list(logits.shape)}")
    probabilities = scores(logits.float(), task)
    targets = targets.to(probabilities.device)
    names = [column_name(name) for name in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"class names {class_names} give repeated column names {names}; rename the classes")
    if task == "multilabel":
        positives = (targets == 1).sum(dim=0)
        negatives = (targets == 0).sum(dim=0)
        recall = MultilabelRecall(num_labels=num_classes, average=None).to(probabilities.device)
        specificity = MultilabelSpecificity(num_labels=num_classes, average=None).to(probabilities.device)
        auroc = MultilabelAUROC(num_labels=num_classes, average=None).to(probabilities.device)
        with warnings.catch_warnings():  # torchmetrics' notice about findings without positives: NaN below instead
            warnings.filterwarnings("ignore", message=".*(positive|negative) samples")
            per_auroc = auroc(probabilities, targets)
        per_recall = recall(probabilities, targets)
        balanced = (per_recall + specificity(probabilities, targets)) / 2
        nan = torch.tensor(float("nan"), device=probabilities.device)
        per_recall = torch.where(positives > 0, per_recall, nan)
        balanced = torch.where((positives > 0) & (negatives > 0), balanced, nan)
        per_auroc = torch.where((positives > 0) & (negatives > 0), per_auroc, nan)
        result = {"balanced_accuracy": _mean_of_defined(balanced)}
        result |= {f"recall_{name}": float(value) for name, value in zip(names, per_recall, strict=True)}
        result |= {f"auroc_{name}": float(value) for name, value in zip(names, per_auroc, strict=True)}
        return result
    positives = torch.bincount(targets, minlength=num_classes)
    recall = MulticlassRecall(num_classes=num_classes, average=None).to(probabilities.device)
    per_recall = torch.where(positives > 0, recall(probabilities, targets), float("nan"))
    result = {"balanced_accuracy": _mean_of_defined(per_recall)}
    result |= {f"recall_{name}": float(value) for name, value in zip(names, per_recall, strict=True)}
    return result


def _mean_of_defined(values: Tensor) -> float:
    """Mean of the non-NaN entries of ``values`` ``[K]``; NaN when there are none."""
    defined = values[~values.isnan()]
    return float(defined.mean()) if len(defined) else float("nan")
