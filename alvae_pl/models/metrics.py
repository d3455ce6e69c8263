"""Classification metrics, one definition shared by the training steps and the per-round evaluation."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchmetrics import Accuracy, MetricCollection
from torchmetrics.classification import MulticlassAUROC, MultilabelAUROC
from torchmetrics.utilities import dim_zero_cat

from alvae_pl.data.image_data import TaskKind


class _MacroOverDefinedClasses:
    """Macro AUROC over the classes (findings) where it is defined: a class with no positive or no negative image in
    the data has no ROC curve. torchmetrics scores such a class 0 and averages it in, which drags the mean down
    (MedMNIST's evaluator returns nan); here it is left out of the mean, with one warning naming it."""

    target: list[Tensor]

    def compute(self) -> Tensor:
        with warnings.catch_warnings():  # torchmetrics' own notice about the undefined classes: replaced below
            warnings.filterwarnings("ignore", message=".*(positive|negative) samples")
            per_class = super().compute()  # [K], average=None
        target = dim_zero_cat(self.target)
        if target.ndim == 2:  # multi-label 0/1 [N, K]
            positives = (target == 1).sum(dim=0)
            negatives = (target == 0).sum(dim=0)
            kind = "finding"
        else:  # class indices [N]: one-vs-rest
            positives = torch.bincount(target.long(), minlength=len(per_class))[: len(per_class)]
            negatives = len(target) - positives
            kind = "class"
        defined = (positives > 0) & (negatives > 0)
        if not bool(defined.all()):
            left_out = ", ".join(str(i) for i in (~defined).nonzero().flatten().tolist())
            warnings.warn(
                f"AUROC is undefined for {kind} {left_out} (no positive or no negative image among the "
                f"{len(target)} evaluated): the macro AUROC is the mean over the other {int(defined.sum())}",
                stacklevel=2,
            )
        if not bool(defined.any()):
            return torch.tensor(float("nan"), device=per_class.device)
        return per_class[defined].mean()


class MultilabelMacroAUROC(_MacroOverDefinedClasses, MultilabelAUROC):
    """Multi-label macro AUROC over the findings where it is defined."""

    def __init__(self, num_labels: int, **kwargs) -> None:
        super().__init__(num_labels=num_labels, average="none", **kwargs)


class MulticlassMacroAUROC(_MacroOverDefinedClasses, MulticlassAUROC):
    """One-vs-rest macro AUROC over the classes where it is defined."""

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(num_classes=num_classes, average="none", **kwargs)


def classification_metrics(task: TaskKind, num_classes: int, sync_on_compute: bool = True) -> MetricCollection:
    """Accuracy and macro AUROC, as MedMNIST's evaluator defines them.

    Multi-label: accuracy over every (image, finding) at probability threshold 0.5 and the mean of the
    per-finding AUROCs. Multi-class: argmax accuracy and the one-vs-rest mean AUROC. A class or finding without
    positive (or negative) images in the data is left out of the AUROC mean, with a warning. AUROC matters on
    ChestMNIST, where predicting "no finding" everywhere already scores about 0.947 accuracy.

    ``sync_on_compute=False`` for data that every DDP rank already holds whole.
    ``update(probabilities, targets)`` takes probabilities ``[N, K]`` and targets ``[N]`` (class) or ``[N, K]`` (0/1).
    """
    if task == "multilabel":
        return MetricCollection(
            {
                "accuracy": Accuracy(
                    task="multilabel", num_labels=num_classes, average="micro", sync_on_compute=sync_on_compute
                ),
                "auroc": MultilabelMacroAUROC(num_classes, sync_on_compute=sync_on_compute),
            }
        )
    return MetricCollection(
        {
            "accuracy": Accuracy(task="multiclass", num_classes=num_classes, sync_on_compute=sync_on_compute),
            "auroc": MulticlassMacroAUROC(num_classes, sync_on_compute=sync_on_compute),
        }
    )


def scores(logits: Tensor, task: TaskKind) -> Tensor:
    """Probabilities ``[N, K]``: sigmoid per finding (multi-label) or softmax over classes."""
    return logits.sigmoid() if task == "multilabel" else logits.softmax(dim=1)


def compute_metrics(logits: Tensor, targets: Tensor, task: TaskKind, num_classes: int) -> dict[str, float]:
    """Metrics of a whole split at once: logits ``[N, K]``, targets ``[N]`` or ``[N, K]``."""
    metrics = classification_metrics(task, num_classes, sync_on_compute=False).to(logits.device)
    metrics.update(scores(logits.float(), task), targets)
    return {name: float(value) for name, value in metrics.compute().items()}
