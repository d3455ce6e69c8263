"""The run's one checkpoint file, ``last.ckpt``, rewritten after every epoch or every round."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from alvae_pl.atomic_checkpoint_io import AtomicCheckpointIO


class RunCheckpoint(ModelCheckpoint):
    """Writes ``<dirpath>/last.ckpt`` (one file, replaced atomically) at the end of training epochs.

    Lightning's ``ModelCheckpoint(save_top_k=1, save_last=True)`` writes two files per epoch (the epoch's and
    ``last.ckpt``): ~90 MB each for a ResNet-18 with SGD momentum, ~48 GB per paper run. Active learning has no
    "best" epoch to keep, so this writes ``last.ckpt`` alone, where ``--ckpt_path last`` finds it.

    The file is replaced atomically on every filesystem: ``setup`` gives the strategy an
    :class:`~alvae_pl.atomic_checkpoint_io.AtomicCheckpointIO` in place of Lightning's default, whose temporary file
    lies in the system's temporary directory (a kill while it was moved across filesystems destroyed ``last.ckpt``).
    A checkpoint plugin the user configured is kept as it is.

    Hooks: ``setup`` (the checkpoint writer), ``on_train_epoch_end``, after every other callback's (Lightning runs
    checkpoint callbacks last), so the file holds the state after the epoch's acquisition.
    ``on_validation_end`` writes nothing. The active-learning loop signals its rounds (:meth:`follow_rounds`,
    :meth:`round_ended`) and asks for a write outside an epoch (:meth:`save_now`); this callback never looks the loop
    up.

    Args:
        every: ``epoch`` writes after every epoch, at most once per ``min_interval`` seconds, and always after a
            round's last epoch: a resumed run repeats at most ``min_interval`` seconds of training plus the epoch
            it was killed in. ``round`` writes only after the last epoch of each active-learning round: a resumed
            run repeats the round it was killed in from its start. Either way the resumed run ends with the same
            records, since every round retrains from the round-0 weights with a fresh optimizer and seeded batches.
            Runs without rounds (the VAE) write after every epoch.
        min_interval: with ``every: epoch``, the fewest seconds between two epoch writes (0: every epoch). A
            write costs ~0.2 s (ResNet-18 weights and momentum, ~90 MB); on a GPU an epoch of the paper's MNIST
            recipe takes 0.05-0.4 s, so writing every epoch cost 52 of a run's 141 s on an H200. Rank 0's clock
            decides for every rank.
        dirpath: the folder (default: ``<run folder>/checkpoints``).
        **kwargs: other ``ModelCheckpoint`` arguments (``save_weights_only``, ``verbose``...).

    Attributes:
        save_seconds: seconds spent writing checkpoints in this process, for the run's ``history.csv``.
        writes: checkpoints written in this process.
    """

    def __init__(
        self,
        every: Literal["epoch", "round"] = "epoch",
        min_interval: float = 60.0,
        dirpath: str | Path | None = None,
        **kwargs: Any,
    ):
        if every not in ("epoch", "round"):
            raise ValueError(f"checkpoint.every must be epoch or round, got {every!r}")
        if min_interval < 0:
            raise ValueError(f"checkpoint.min_interval is in seconds, at least 0, got {min_interval}")
        kwargs.setdefault("save_last", True)
        kwargs.setdefault("save_top_k", 0)
        kwargs.setdefault("save_on_train_epoch_end", True)
        super().__init__(dirpath=dirpath, **kwargs)
        self.every = every
        self.min_interval = min_interval
        self.save_seconds = 0.0
        self.writes = 0
        self._last_write = time.monotonic()
        self._follows_rounds = False
        self._round_end_epoch = -1

    @classmethod
    def last_path(cls, run_folder: str | Path, dirpath: str | Path | None = None) -> Path:
        """Where a run in ``run_folder`` writes its ``last.ckpt`` (``dirpath`` as given to this callback)."""
        folder = Path(dirpath) if dirpath is not None else Path(run_folder) / "checkpoints"
        return folder / f"{cls.CHECKPOINT_NAME_LAST}{cls.FILE_EXTENSION}"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if (
            type(trainer.strategy.checkpoint_io) is TorchCheckpointIO
        ):  # Lightning's default: not atomic across filesystems
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_write = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or not self._due(trainer):
            return
        self.save_now(trainer)

    def save_now(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` now: after an epoch, or when the loop stops before training (a cold start waiting for
        an expert's first labels). A collective under DDP: every rank calls it."""
        started = time.perf_counter()
        filepath = str(Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}")
        self.last_model_path = filepath  # part of the saved state: set before saving
        trainer.save_checkpoint(filepath, self.save_weights_only)  # a collective: every rank calls it
        self.save_seconds += time.perf_counter() - started
        self.writes += 1
        self._last_write = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: checkpoints follow training epochs and rounds, never validation."""

    def follow_rounds(self) -> None:
        """The active-learning loop's signal that this fit runs rounds: from then on ``every`` decides, and a round's
        last epoch (:meth:`round_ended`) always writes. Without it (a run without rounds, the VAE) every epoch
        writes."""
        self._follows_rounds = True

    def round_ended(self, epoch: int) -> None:
        """The loop's signal that a round ended at ``epoch`` (its acquisition done): that epoch's write is due."""
        self._round_end_epoch = epoch

    def _due(self, trainer: L.Trainer) -> bool:
        if not self._follows_rounds or self._round_end_epoch == trainer.current_epoch:
            return True
        if self.every == "round":
            return False
        if self.min_interval <= 0:
            return True
        due = time.monotonic() - self._last_write >= self.min_interval
        # Writing is a collective under DDP: every rank must decide alike.
        return bool(trainer.strategy.broadcast(due, src=0))
