"""A callback that records the epoch of every checkpoint written, for the checkpoint-frequency tests."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class CheckpointProbe(Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_save_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:
        self.epochs.append(trainer.current_epoch)
