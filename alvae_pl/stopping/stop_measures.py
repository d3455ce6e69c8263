"""What the stopping criteria read, measured at the end of every round: predictions on a fixed stop set."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import Tensor

from alvae_pl.callbacks.sharded_inference import pool_logits
from alvae_pl.seeding import STOP_SET_STREAM, derive_seed
from alvae_pl.stopping.rule import rows_to_columns
from alvae_pl.stopping.stabilizing_predictions import prediction_agreement
from alvae_pl.stopping.uncertainty import normalized_uncertainty
from alvae_pl.stopping.validation_plateau import metric_gains

if TYPE_CHECKING:
    from alvae_pl.data.datamodule import ActiveDataModule
    from alvae_pl.models.task_model import TaskModel

#: The history columns :meth:`StopMeasures.measure` fills.
STOP_COLUMNS = ("stop_kappa", "stop_max_uncertainty", "stop_mean_uncertainty", "stop_val_gain")


class StopMeasures:
    """Measures, at each round's end, the values the stopping criteria read, whether or not a rule is configured.

    The stop set is a fixed sample of ``size`` unlabeled pool images (all of them if fewer), drawn once at the end of
    round 0 from the run's seed. Images of it that get labeled later stay in it for the agreement between rounds
    (the same images every round, so that kappa compares like with like) and leave it for the uncertainty (which
    estimates the unlabeled pool's). Its cost is one inference over ``size`` images per round, sharded over the DDP
    ranks like the evaluation.

    Columns (NaN where undefined):

    - ``stop_kappa``: Cohen's kappa between this round's and the previous round's predictions on the stop set;
    - ``stop_max_uncertainty``, ``stop_mean_uncertainty``: the normalized entropy (0..1) of the stop set's unlabeled
      images, their maximum and mean;
    - ``stop_val_gain``: the main validation metric's gain over its best earlier round (``val_accuracy``;
      ``val_auroc`` for multi-label tasks).

    State (checkpointed by the loop): the stop set's pool positions and the previous round's predictions, so that a
    resumed run measures what an uninterrupted one would.

    Args:
        size: images in the stop set; 0 measures only ``stop_val_gain``.
        seed: the run's seed; the stop set is drawn with a generator derived from it.
    """

    def __init__(self, size: int = 1000, seed: int = 0) -> None:
        if size < 0:
            raise ValueError(f"active.stop_set_size must be >= 0, got {size}")
        self.size = size
        self.seed = seed
        #: Pool positions of the stop set, int64 ``[S]`` ascending (empty until round 0 ends).
        self.positions = torch.empty(0, dtype=torch.int64)
        #: The previous round's predictions on the stop set: int64 classes ``[S]`` or 0/1 findings ``[S, K]``.
        self.previous: Tensor | None = None

    def measure(self, trainer: L.Trainer, model: TaskModel, history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """The stop columns of the round that ends now; ``history`` holds the earlier rows and this round's (its
        metrics already in). Every rank must call it (the inference is a collective)."""
        multilabel = model.task == "multilabel"
        main_metric = "val_auroc" if multilabel else "val_accuracy"
        columns = rows_to_columns(history)
        row = {name: math.nan for name in STOP_COLUMNS}
        if main_metric in columns:
            row["stop_val_gain"] = metric_gains(columns[main_metric])[-1]
        datamodule: ActiveDataModule = trainer.datamodule
        if self.size == 0:
            return row
        pool = datamodule.pool
        if self.previous is None and not len(self.positions):
            unlabeled = pool.unlabeled
            generator = torch.Generator().manual_seed(derive_seed(self.seed, STOP_SET_STREAM, 1))
            order = torch.randperm(len(unlabeled), generator=generator)[: self.size]
            self.positions = unlabeled[order].sort().values
        if not len(self.positions):
            return row
        positions = self.positions
        logits = pool_logits(trainer, model, positions, "Predicting the stop set").cpu()
        predictions = (logits > 0).long() if multilabel else logits.argmax(dim=1)
        if self.previous is not None:
            row["stop_kappa"] = prediction_agreement(self.previous, predictions)
        self.previous = predictions
        unlabeled = ~torch.isin(positions, pool.labeled)
        if unlabeled.any():
            uncertainty = normalized_uncertainty(logits[unlabeled], multilabel)
            row["stop_max_uncertainty"] = uncertainty.max().item()
            row["stop_mean_uncertainty"] = uncertainty.mean().item()
        return row

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors (checkpoints load weights-only)."""
        return {
            "positions": self.positions.clone(),
            "previous": None if self.previous is None else self.previous.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.positions = state["positions"].clone()
        self.previous = None if state["previous"] is None else state["previous"].clone()
