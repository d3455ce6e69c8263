"""A callback that SIGKILLs its own process, for the resume tests (importable by ``train.py`` via PYTHONPATH)."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class KillSwitch(Callback):
    """Dies without any cleanup, like a preempted job.

    Args:
        at_step: kill after this many optimizer steps (mid-epoch).
        at_checkpoint_of_epoch: kill while the checkpoint of this epoch is being assembled, i.e. after that
            epoch's acquisition and record writing, before ``last.ckpt`` is replaced.
    """

    def __init__(self, at_step: int = -1, at_checkpoint_of_epoch: int = -1) -> None:
        self.at_step = at_step
        self.at_checkpoint_of_epoch = at_checkpoint_of_epoch

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_save_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.current_epoch == self.at_checkpoint_of_epoch:
            os.kill(os.getpid(), signal.SIGKILL)
