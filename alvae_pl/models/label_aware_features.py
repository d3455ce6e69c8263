"""VAE features from a label-aware VAE that the active-learning loop retrains at the end of every round."""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
from torch import Tensor

from alvae_pl.data.image_data import TaskKind
from alvae_pl.models.label_aware_vae import LabelAwareVAE
from alvae_pl.models.vae_features import VAEFeatures


class LabelAwareVAEFeatures(VAEFeatures):
    """V(u) of a label-aware VAE (:class:`~alvae_pl.models.label_aware_vae.LabelAwareVAE`, Kingma's M2), in place
    of the frozen, label-blind VAE of the paper: the same object wherever eq. 6 applies.

    There is no checkpoint to read: the model is built (seeded by ``seed``) when a run starts, and at the end of
    each round, before acquisition, the active-learning loop trains it on the whole pool with the labels known at
    that moment (:meth:`fit_round`). Its weights and optimizer state are part of the run's checkpoint.

    Args:
        alpha: weight of V(u) beside the task features (eq. 6).
        normalize: for distances: each block divided by its mean norm before weighting (see ``VAEFeatures``).
        epochs_per_round: training epochs over the pool at each round's end.
        restart: ``continue`` trains on from the previous round's weights and optimizer (cheaper, the default);
            ``scratch`` starts every round from the initial weights with a fresh optimizer.
        latent_dim: size of z; V(u) adds the K-dimensional label belief to its mean.
        classifier_weight: weight of the classifier's cross-entropy on labeled images (``LabelAwareVAE``).
        marginalize: ``exact`` (M2: one decoder pass per class for each unlabeled image) or ``mean_field`` (the
            expected label, one pass); multi-label data is always mean-field (``LabelAwareVAE``).
        lr: Adam learning rate (the paper's VAE: 0.001).
        weight_decay: Adam weight decay (the paper's VAE: 0.005).
        batch_size: images per training step.
        seed: seeds the initial weights.
        knowledge_images: after each round's training, measure what V(u) knows about the classes of this many test
            images (a fixed random subset of the test split, or of the validation split where there is none; all of
            them where there are fewer; 0: do not measure): 5-NN accuracy and k-means NMI
            (:mod:`~alvae_pl.models.class_knowledge`), in ``history.csv`` as ``vae_knn_accuracy`` and
            ``vae_kmeans_nmi`` and in TensorBoard. The default 2,000 costs about a second a round; the whole of
            ChestMNIST's 22,433 test images took 32 s on 2 CPU cores.

    Example YAML (core-set on ``[T_f(u), V(u)]`` with the label-aware VAE)::

        features:
          vae:
            class_path: alvae_pl.models.label_aware_features.LabelAwareVAEFeatures
            init_args: {epochs_per_round: 5}
    """

    def __init__(
        self,
        alpha: float = 1.0,
        normalize: bool = False,
        epochs_per_round: int = 5,
        restart: Literal["continue", "scratch"] = "continue",
        latent_dim: int = 32,
        classifier_weight: float = 500.0,
        marginalize: Literal["exact", "mean_field"] = "exact",
        lr: float = 1e-3,
        weight_decay: float = 5e-3,
        batch_size: int = 64,
        seed: int = 0,
        knowledge_images: int = 2000,
    ) -> None:
        super().__init__(checkpoint="", alpha=alpha, normalize=normalize)
        if epochs_per_round < 1:
            raise ValueError(f"epochs_per_round must be at least 1, got {epochs_per_round}")
        if restart not in ("continue", "scratch"):
            raise ValueError(f"restart must be continue or scratch, got {restart!r}")
        if batch_size < 1 or latent_dim < 1 or not (lr > 0 and math.isfinite(lr)):
            raise ValueError("batch_size and latent_dim must be at least 1 and lr a positive number")
        self.epochs_per_round = epochs_per_round
        self.restart = restart
        self._latent_dim = latent_dim
        self.classifier_weight = classifier_weight
        self.marginalize = marginalize
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.seed = seed
        if knowledge_images < 0:
            raise ValueError(f"knowledge_images must be 0 (off) or more, got {knowledge_images}")
        self.knowledge_images = knowledge_images
        self.rounds_trained = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self._initial_state: dict[str, Tensor] | None = None

    @property
    def feature_dim(self) -> int:
        """Size of V(u): the latent mean and the label belief (``latent_dim + K``; known once built)."""
        return self._encoder().feature_dim

    @property
    def name(self) -> str:
        return "label-aware VAE V(u)"

    def load(
        self,
        num_channels: int,
        image_size: int,
        device: torch.device | str | None = None,
        *,
        num_classes: int | None = None,
        task: TaskKind | None = None,
    ) -> LabelAwareVAEFeatures:
        """Builds the model for the data's shape and labels (once; later calls only move it)."""
        if self.encoder is None:
            if num_classes is None or task is None:
                raise ValueError("a label-aware VAE needs the data's num_classes and task to be built")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = LabelAwareVAE(
                    num_channels, image_size, num_classes, task, self._latent_dim, self.classifier_weight,
                    self.marginalize,
                )  # fmt: skip
            # Frozen outside fit_round: inside a task model, DDP must not expect gradients for it.
            self.encoder = model.eval().requires_grad_(False)
            self._initial_state = copy.deepcopy(model.state_dict())
        elif (self.encoder.num_channels, self.encoder.image_size) != (num_channels, image_size):
            raise ValueError(
                f"the label-aware VAE was built for {self.encoder.num_channels}-channel {self.encoder.image_size}px "
                f"images; the data's are {num_channels}-channel {image_size}px"
            )
        if device is not None:
            self.to(device)
        if self.optimizer is None:
            self.optimizer = self._new_optimizer()
        return self

    def encode(self, images: Tensor) -> Tensor:
        """V(u), unweighted: float ``[B, latent_dim + K]`` of uint8 images ``[B, C, H, W]``."""
        return self._encoder().features(images)

    def describe(self) -> dict[str, Any]:
        return {"label_aware": True, "alpha": self.alpha, "normalize": self.normalize,
                "epochs_per_round": self.epochs_per_round, "restart": self.restart}  # fmt: skip

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self._encoder().parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------------------------------ training
    def fit_round(self, images: Tensor, targets: Tensor, labeled: Tensor, generator: torch.Generator) -> float:
        """Trains ``epochs_per_round`` epochs on the pool, in seeded batches; returns the last epoch's mean loss.

        Args:
            images: uint8 ``[N, C, H, W]``, the whole pool, on the model's device.
            targets: ``[N]`` or ``[N, K]``; read only where ``labeled``.
            labeled: bool ``[N]``.
            generator: on the model's device; draws the batches' order and the reparameterisation noise.
        """
        model = self._encoder()
        if self.restart == "scratch" and self._initial_state is not None:
            model.load_state_dict(self._initial_state)
            self.optimizer = self._new_optimizer()
        assert self.optimizer is not None
        model.train().requires_grad_(True)
        total, count = 0.0, 0
        for _ in range(self.epochs_per_round):
            total, count = torch.zeros((), device=images.device), 0
            order = torch.randperm(len(images), generator=generator, device=generator.device).to(images.device)
            for start in range(0, len(images), self.batch_size):
                rows = order[start : start + self.batch_size]
                losses = model.loss(images[rows], targets[rows], labeled[rows], generator)
                self.optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                self.optimizer.step()
                total += losses["loss"].detach() * len(rows)
                count += len(rows)
        model.eval().requires_grad_(False)
        self.rounds_trained += 1
        return float(total) / max(count, 1)

    def round_state(self) -> dict[str, Any]:
        """What a checkpoint must hold to go on exactly: weights, optimizer state, rounds trained."""
        optimizer = self.optimizer.state_dict() if self.optimizer is not None else None
        return {"weights": self._encoder().state_dict(), "optimizer": optimizer, "rounds_trained": self.rounds_trained}

    def load_round_state(self, state: dict[str, Any]) -> None:
        self._encoder().load_state_dict(state["weights"])
        self.optimizer = self._new_optimizer()
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.rounds_trained = int(state["rounds_trained"])
