"""Classification metrics, one definition shared by the training steps and the per-round evaluation."""

from __future__ import annotations

from torch import Tensor
from torchmetrics import AUROC, Accuracy, MetricCollection

from alvae_pl.data.image_data import TaskKind


def classification_metrics(task: TaskKind, num_classes: int, sync_on_compute: bool = True) -> MetricCollection:
    """Accuracy and macro AUROC, as MedMNIST's evaluator defines them.

    Multi-label: accuracy over every (image, finding) at probability threshold 0.5 and the mean of the
    per-finding AUROCs. Multi-class: argmax accuracy and the one-vs-rest mean AUROC. AUROC matters on
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
                "auroc": AUROC(
                    task="multilabel", num_labels=num_classes, average="macro", sync_on_compute=sync_on_compute
                ),
            }
        )
    return MetricCollection(
        {
            "accuracy": Accuracy(task="multiclass", num_classes=num_classes, sync_on_compute=sync_on_compute),
            "auroc": AUROC(
                task="multiclass", num_classes=num_classes, average="macro", sync_on_compute=sync_on_compute
            ),
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
