"""The evaluation at the end of a round, on the round's final weights: every rank its shard of each split."""

from __future__ import annotations

import lightning as L

from alvae_pl.callbacks.sharded_inference import sharded_inference
from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.models.metrics import compute_metrics
from alvae_pl.models.per_class_metrics import per_class_metrics
from alvae_pl.models.task_model import TaskModel


def recompute_batch_norm_on_labeled(trainer: L.Trainer, model: TaskModel, datamodule: ActiveDataModule) -> None:
    """The task model's batch-norm statistics recomputed on the labeled images (``TaskModel.recompute_batch_norm``).

    Every rank passes over all labeled images (not a shard), so every rank gets the same statistics."""
    labeled, batch = datamodule.pool.labeled, datamodule.eval_batch_size
    with trainer.precision_plugin.forward_context():
        model.recompute_batch_norm(
            datamodule.pool_images(labeled[start : start + batch]).to(model.device)
            for start in range(0, len(labeled), batch)
        )


def evaluate_splits(
    trainer: L.Trainer, model: TaskModel, datamodule: ActiveDataModule, names: list[str]
) -> dict[str, float]:
    """The metrics of ``model`` on each split of ``names`` (``"val"``, ``"test"``), the same on every rank.

    Returns:
        ``<split>_<metric>`` -> value: accuracy and AUROC (:func:`~alvae_pl.models.metrics.compute_metrics`), and the
        per-class ones (:func:`~alvae_pl.models.per_class_metrics.per_class_metrics`).
    """
    row: dict[str, float] = {}
    for name in names:
        split = getattr(datamodule.data, name)
        logits = sharded_inference(
            trainer,
            model,
            len(split),
            lambda rows, name=name: {"logits": model(datamodule.split_images(name, rows).to(model.device))},
            datamodule.eval_batch_size,
            f"Evaluating {name}",
        )["logits"]
        metrics = compute_metrics(logits.cpu(), split.targets, model.task, model.num_classes)
        metrics |= per_class_metrics(logits.cpu(), split.targets, model.task, datamodule.data.class_names)
        row.update({f"{name}_{metric}": value for metric, value in metrics.items()})
    return row
