"""Retraining the label-aware VAEs of a run on the pool, with the labels known at the start of a round."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.models.class_knowledge import measure
from alvae_pl.models.label_aware_features import LabelAwareVAEFeatures
from alvae_pl.seeding import LABEL_AWARE_VAE_STREAM, derive_seed

#: The history columns of :func:`retrain_label_aware`'s measure (NaN when nothing was measured).
KNOWLEDGE_COLUMNS = ("vae_knn_accuracy", "vae_kmeans_nmi")
#: Seeds the subset of the split measured: the same images in every run and round.
KNOWLEDGE_SUBSET_SEED = 0


class LabelAwareRetraining:
    """The label-aware VAEs of a run, retrained at the start of every round on the labels known then, and what each
    round's retraining cost and measured. Owned by the active-learning loop, which calls :meth:`at_round_start` and
    reads :meth:`round_columns` into the round's history row; its state travels in the loop's checkpoint state.

    Args:
        seed: with the round, seeds each retraining (``LABEL_AWARE_VAE_STREAM``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        #: The round whose labels the VAEs were last trained with (-1: not yet); set even when the run has none.
        self.trained_round = -1
        #: Seconds the current round's retraining took (NaN: none, or no label-aware VAE).
        self.round_seconds = math.nan
        #: ``KNOWLEDGE_COLUMNS`` -> what the current round's V(u) knows of the classes (empty: not measured).
        self.round_knowledge: dict[str, float] = {}
        self._features: list[LabelAwareVAEFeatures] = []
        self._restored: list[dict[str, Any]] | None = None

    def attach(self, heuristic: object, model: L.LightningModule) -> None:
        """Finds the run's label-aware VAEs (:func:`find_label_aware`), with the weights and optimizers a resumed
        run's checkpoint holds. Called at the fit's start, once the heuristic has built its feature models."""
        self._features = find_label_aware(heuristic, model)
        if self._restored is not None:
            for features, state in zip(self._features, self._restored, strict=True):
                features.load_round_state(state)
            self._restored = None

    def at_round_start(self, trainer: L.Trainer, device: torch.device, round_index: int) -> None:
        """Retrains the VAEs with round ``round_index``'s labels, once per round (a resumed round is not retrained:
        its VAEs came back with the checkpoint)."""
        if self.trained_round == round_index:
            return
        started = time.perf_counter()
        if self._features:
            self.round_knowledge = retrain_label_aware(trainer, self._features, device, self.seed, round_index)
            self.round_seconds = time.perf_counter() - started
        self.trained_round = round_index

    def round_columns(self) -> dict[str, float]:
        """The history columns of the current round: ``vae_seconds`` and the measured knowledge, if any."""
        return {"vae_seconds": self.round_seconds, **self.round_knowledge}

    def next_round(self) -> None:
        """Forgets the finished round's cost and measure."""
        self.round_seconds = math.nan
        self.round_knowledge = {}

    def state_dict(self) -> dict[str, Any]:
        # The keys the loop's checkpoint state has always used for these.
        return {
            "vae_trained_round": self.trained_round,
            "round_vae_seconds": self.round_seconds,
            "round_vae_knowledge": dict(self.round_knowledge),
            "label_aware_vaes": [features.round_state() for features in self._features],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.trained_round = state_dict.get("vae_trained_round", -1)
        self.round_seconds = state_dict.get("round_vae_seconds", math.nan)
        self.round_knowledge = dict(state_dict.get("round_vae_knowledge") or {})
        # Applied by ``attach``, once the heuristic has built its feature models.
        self._restored = state_dict.get("label_aware_vaes") or None


def find_label_aware(heuristic: object, model: L.LightningModule) -> list[LabelAwareVAEFeatures]:
    """The label-aware VAE features a run uses: the heuristic's feature space's (or, for a wrapper such as
    ``ClassBalanced``, its inner heuristic's) and/or the model's, each once."""
    found: list[LabelAwareVAEFeatures] = []
    while getattr(heuristic, "features", None) is None and getattr(heuristic, "heuristic", None) is not None:
        heuristic = heuristic.heuristic
    space = getattr(heuristic, "features", None)
    for candidate in (getattr(space, "vae", None), getattr(model, "vae", None)):
        if isinstance(candidate, LabelAwareVAEFeatures) and all(candidate is not f for f in found):
            found.append(candidate)
    return found


def retrain_label_aware(
    trainer: L.Trainer, features: Sequence[LabelAwareVAEFeatures], device: torch.device, seed: int, round_index: int
) -> dict[str, float]:
    """Trains each of ``features`` on the whole pool with the labels known now (``fit_round``), seeded by
    (``seed``, round). Rank zero trains; every other rank receives its weights, so all ranks measure alike.

    Only the labeled images' targets are read; the others (unknown, or hidden by a simulation) are zeroed.

    Returns:
        ``KNOWLEDGE_COLUMNS`` -> what the first VAE's V(u) knows of the classes after training (NaN where it does
        not measure), the same on every rank.
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
    knowledge = dict.fromkeys(KNOWLEDGE_COLUMNS, math.nan)
    for index, model in enumerate(features):
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
            if index == 0 and model.knowledge_images > 0:
                knowledge = class_knowledge(datamodule, model, device)
        state = trainer.strategy.broadcast(state, src=0)
        if not trainer.is_global_zero:
            model.load_round_state(state)
    return trainer.strategy.broadcast(knowledge, src=0)


@torch.no_grad()
def class_knowledge(
    datamodule: ActiveDataModule, model: LabelAwareVAEFeatures, device: torch.device
) -> dict[str, float]:
    """5-NN accuracy and k-means NMI of ``model``'s V(u) on ``model.knowledge_images`` images of the test split (the
    validation split without one): the same images every round, drawn with a fixed seed."""
    name = "test" if len(datamodule.data.test) else "val"
    split = getattr(datamodule.data, name)
    if not len(split):
        return dict.fromkeys(KNOWLEDGE_COLUMNS, math.nan)
    rows = torch.arange(len(split))
    if len(split) > model.knowledge_images:
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(KNOWLEDGE_SUBSET_SEED))
        rows = order[: model.knowledge_images].sort().values
    batch = datamodule.eval_batch_size
    embedded = torch.cat(
        [model(datamodule.split_images(name, rows[start : start + batch]).to(device)).cpu()
         for start in range(0, len(rows), batch)]
    )  # fmt: skip
    result = measure(name, embedded.numpy(), split.targets[rows].numpy())
    rank_zero_info(f"Label-aware VAE on {len(rows)} {name} images: 5-NN accuracy {result.knn_accuracy:.3f}, "
                   f"k-means NMI {result.kmeans_nmi:.3f}")  # fmt: skip
    return {"vae_knn_accuracy": result.knn_accuracy, "vae_kmeans_nmi": result.kmeans_nmi}
