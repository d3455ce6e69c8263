"""The run's one checkpoint file, ``last.ckpt``, rewritten after every epoch or every round."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """Writes ``<dirpath>/last.ckpt`` (one file, replaced atomically) at the end of training epochs.

    Lightning's ``ModelCheckpoint(save_top_k=1, save_last=True)`` writes two files per epoch (the epoch's and
    ``last.ckpt``): ~90 MB each for a ResNet-18 with SGD momentum, ~48 GB per paper run. Active learning has no
    "best" epoch to keep, so this writes ``last.ckpt`` alone, where ``--ckpt_path last`` finds it.

    Hooks: ``on_train_epoch_end``, after every other callback's (Lightning runs checkpoint callbacks last), so
    the file holds the state after the epoch's acquisition. ``on_validation_end`` writes nothing.

    Args:
        every: ``epoch`` writes after every epoch: a resumed run repeats at most the epoch it was killed in.
            ``round`` writes only after the last epoch of each active-learning round: a resumed run repeats the
            round it was killed in from its start, which gives the same result, since every round retrains from
            the round-0 weights with a fresh optimizer and seeded batches. Runs without rounds (the VAE) write
            after every epoch either way.
        dirpath: the folder (default: ``<run folder>/checkpoints``).
        **kwargs: other ``ModelCheckpoint`` arguments (``save_weights_only``, ``verbose``...).

    Attributes:
        save_seconds: seconds spent writing checkpoints in this process, for the run's ``history.csv``.
    """

    def __init__(self, every: Literal["epoch", "round"] = "epoch", dirpath: str | Path | None = None, **kwargs: Any):
        if every not in ("epoch", "round"):
            raise ValueError(f"checkpoint.every must be epoch or round, got {every!r}")
        kwargs.setdefault("save_last", True)
        kwargs.setdefault("save_top_k", 0)
        kwargs.setdefault("save_on_train_epoch_end", True)
        super().__init__(dirpath=dirpath, **kwargs)
        self.every = every
        self.save_seconds = 0.0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or not self._due(trainer):
            return
        started = time.perf_counter()
        filepath = str(Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}")
        self.last_model_path = filepath  # part of the saved state: set before saving
        trainer.save_checkpoint(filepath, self.save_weights_only)  # a collective: every rank calls it
        self.save_seconds += time.perf_counter() - started

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: checkpoints follow training epochs and rounds, never validation."""

    def _due(self, trainer: L.Trainer) -> bool:
        if self.every == "epoch":
            return True
        # Imported here: the loop is this callback's optional partner, not a dependency of checkpointing.
        from alvae_pl.callbacks.active_learning_loop import ActiveLearningLoop

        loop = next((cb for cb in trainer.callbacks if isinstance(cb, ActiveLearningLoop)), None)
        if loop is None or not loop.active:
            return True
        return loop.last_round_end_epoch == trainer.current_epoch
