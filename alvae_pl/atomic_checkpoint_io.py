"""Checkpoints written whole or not at all, on every filesystem."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from alvae_pl.atomic_files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves go through :func:`~alvae_pl.atomic_files.atomic_write`.

    Lightning's own save writes to a temporary file in the system's temporary directory and then moves it over the
    checkpoint. When the run folder is on another filesystem (a tmpfs ``/tmp``; runs on NFS or Lustre) that move is
    a copy that truncates the old checkpoint first: a kill during the copy, or a full disk, destroyed ``last.ckpt``.
    Here the temporary file lies beside the checkpoint and is renamed over it after an fsync, so the previous
    ``last.ckpt`` stays whole until the new one is complete. Loading is Lightning's.

    Installed by :class:`~alvae_pl.callbacks.run_checkpoint.RunCheckpoint` on the Trainer's strategy.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        # Serialised in memory first (as Lightning does): torch's zip writer turns a failed file write into a
        # RuntimeError about stream positions, while a plain write of the bytes reports a full disk as such.
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(Path(path), lambda handle: handle.write(buffer.getbuffer()))
