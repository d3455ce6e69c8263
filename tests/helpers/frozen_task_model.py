"""A task model whose weights and batch-norm statistics never change, for DDP-versus-one-process tests.

Training under DDP sees other batches than one process does, so the two can only be compared on equal
weights; with these, every round's acquisition runs on the round-0 weights in both.
"""

from __future__ import annotations

import torch
from torch import nn

from alvae_pl.models.task_model import TaskModel


class FrozenTaskModel(TaskModel):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_fit_start(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0  # running statistics stay at their initial values
