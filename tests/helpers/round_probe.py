"""A callback that records, at the first epoch of every round, whether training starts afresh."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from alvae_pl.callbacks.active_learning_loop import ActiveLearningLoop


class RoundProbe(Callback):
    def __init__(self) -> None:
        self.rounds: list[dict[str, bool | int]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = next(c for c in trainer.callbacks if isinstance(c, ActiveLearningLoop))
        if trainer.current_epoch != loop.round_start_epoch:
            return
        current = pl_module.state_dict()
        self.rounds.append(
            {
                "round": loop.round_index,
                "initial_weights": all(torch.equal(current[k], v) for k, v in pl_module._initial_state.items()),
                "fresh_optimizer": all(len(state) == 0 for state in trainer.optimizers[0].state.values()),
                "labeled": trainer.datamodule.pool.num_labeled,
            }
        )
