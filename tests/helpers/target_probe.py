"""A callback that writes, on every rank, the labels the train loader serves for the labeled images (DDP tests)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


class TargetProbe(Callback):
    """At the start of training, ``<folder>/rank_<r>.json``: ``{file: target}`` of every labeled pool image, read from
    the targets the train loader serves on that rank."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        pool = datamodule.pool
        served = datamodule.served.train.targets[
            pool.dataset_indices[pool.labeled].to(datamodule.served.train.targets.device)
        ]
        files = datamodule.pool_files
        record = {files[p]: t for p, t in zip(pool.labeled.tolist(), served.tolist(), strict=True)}
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank_{trainer.global_rank}.json").write_text(json.dumps(record, sort_keys=True))
