"""A callback that checks, under DDP, that every rank holds the same label-aware VAE (importable by ``train.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from alvae_pl.callbacks.active_learning_loop import ActiveLearningLoop
from alvae_pl.callbacks.label_aware_retraining import find_label_aware


class LabelAwareVAEProbe(Callback):
    """After every epoch, each rank's checksum of its label-aware VAE's weights, gathered on rank zero and written to
    ``<run folder>/vae_checksums.json``: one list per epoch, one checksum per rank."""

    def __init__(self) -> None:
        self.checksums: list[list[float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = next(c for c in trainer.callbacks if isinstance(c, ActiveLearningLoop))
        vae = find_label_aware(loop.heuristic, pl_module)[0]
        weights = [value for value in vae.encoder.state_dict().values() if value.is_floating_point()]
        checksum = torch.stack([value.double().abs().sum() for value in weights]).sum()
        gathered = trainer.strategy.all_gather(checksum.to(pl_module.device))
        folder = Path(trainer.log_dir)  # a collective too (Lightning broadcasts it): every rank asks
        if trainer.is_global_zero:
            self.checksums.append([float(value) for value in gathered.reshape(-1)])
            (folder / "vae_checksums.json").write_text(json.dumps(self.checksums))
