"""An encoder's checkpoint file (the VAE's, the contrastive encoder's) read with one-line errors that say how to
write the right one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class EncoderCheckpointFile:
    """The Lightning checkpoint at ``path`` that should hold a ``what`` (``"VAE"``), written by ``train_hint`` (the
    command that trains one)."""

    path: str
    what: str
    train_hint: str

    @property
    def not_ours(self) -> str:
        """The error for a file that holds something else."""
        return f"{self.path} is not a {self.what} checkpoint; pass one written by {self.train_hint}"

    def read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(hyper_parameters, state_dict)``, read on the CPU without unpickling code (``weights_only``).

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is no checkpoint, or lacks either dictionary.
        """
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"no {self.what} checkpoint at {self.path}; train one with {self.train_hint}")
        try:
            checkpoint = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling errors come in many types; all mean "not ours"
            raise ValueError(f"{self.not_ours} ({type(error).__name__})") from error
        hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
        state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
        if not isinstance(hparams, dict) or not isinstance(state, dict):
            raise ValueError(self.not_ours)
        return hparams, state

    def check_images(self, hparams: dict[str, Any], num_channels: int, image_size: int) -> None:
        """A one-line error unless the encoder was trained on ``num_channels``-channel ``image_size`` px images."""
        trained = (int(hparams.get("num_channels", -1)), int(hparams.get("image_size", -1)))
        if trained != (num_channels, image_size):
            raise ValueError(
                f"the {self.what} at {self.path} was trained on {trained[0]}-channel {trained[1]}x{trained[1]} images "
                f"but the data has {num_channels}-channel {image_size}x{image_size} images; train one on this data set"
            )
