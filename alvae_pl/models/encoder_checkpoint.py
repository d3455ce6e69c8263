"""The task-agnostic features a checkpoint file holds, whichever encoder wrote it (for commands given a path)."""

from __future__ import annotations

from pathlib import Path

import torch

from alvae_pl.models.contrastive import is_contrastive_state
from alvae_pl.models.contrastive_features import ContrastiveFeatures
from alvae_pl.models.encoder_features import EncoderFeatures
from alvae_pl.models.vae_features import VAEFeatures


def features_from_checkpoint(path: str | Path, alpha: float = 1.0, normalize: bool = False) -> EncoderFeatures:
    """:class:`ContrastiveFeatures` for a contrastive encoder's checkpoint, :class:`VAEFeatures` for anything else
    (whose :meth:`~EncoderFeatures.load` then says what is wrong with a file that is no VAE's either). Not loaded."""
    state = None
    if Path(path).is_file():
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
        except Exception:  # not a checkpoint at all: the VAE loader words the error
            state = None
    if isinstance(state, dict) and is_contrastive_state(state):
        return ContrastiveFeatures(str(path), alpha=alpha, normalize=normalize)
    return VAEFeatures(str(path), alpha=alpha, normalize=normalize)
