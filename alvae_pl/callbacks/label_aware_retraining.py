"""Retraining the label-aware VAEs of a run on the pool, with the labels known at the start of a round."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.models.label_aware_features import LabelAwareVAEFeatures
from alvae_pl.seeding import LABEL_AWARE_VAE_STREAM, derive_seed


def find_label_aware(heuristic: object, model: L.LightningModule) -> list[LabelAwareVAEFeatures]:
    """The label-aware VAE features a run uses: the heuristic's feature space's and/or the model's, each once."""
    found: list[LabelAwareVAEFeatures] = []
    space = getattr(heuristic, "features", None)
    for candidate in (getattr(space, "vae", None), getattr(model, "vae", None)):
        if isinstance(candidate, LabelAwareVAEFeatures) and all(candidate is not f for f in found):
            found.append(candidate)
    return found


def retrain_label_aware(
    trainer: L.Trainer, features: Sequence[LabelAwareVAEFeatures], device: torch.device, seed: int, round_index: int
) -> None:
    """Trains each of ``features`` on the whole pool with the labels known now (``fit_round``), seeded by
    (``seed``, round). Rank zero trains; every other rank receives its weights, so all ranks measure alike.

    Only the labeled images' targets are read; the others (unknown, or hidden by a simulation) are zeroed.
    """
    datamodule: ActiveDataModule = trainer.datamodule
    pool = datamodule.pool
    positions = torch.arange(len(pool))
    labeled = torch.zeros(len(pool), dtype=torch.bool)
    labeled[pool.labeled] = True
    targets = datamodule.pool_targets(positions).clone()
    targets[~labeled] = 0
    # The pool on the device once, for every VAE; only rank zero trains.
    images = datamodule.pool_images(positions).to(device) if trainer.is_global_zero else None
    for model in features:
        state = None
        if trainer.is_global_zero:
            generator = torch.Generator(device=device)
            generator.manual_seed(derive_seed(seed, LABEL_AWARE_VAE_STREAM, round_index + 1))
            loss = model.fit_round(images, targets.to(device), labeled.to(device), generator)
            rank_zero_info(
                f"Label-aware VAE: {model.epochs_per_round} epochs on {len(pool)} images "
                f"({pool.num_labeled} labeled), loss {loss:.1f}"
            )
            state = model.round_state()
        state = trainer.strategy.broadcast(state, src=0)
        if not trainer.is_global_zero:
            model.load_round_state(state)
