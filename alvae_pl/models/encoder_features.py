"""The task-agnostic features interface: V(u) of any encoder, with the weight it gets beside the task features.

Every consumer of eq. 6, ``[T_f(u), alpha * V(u)]`` (the distance heuristics' feature space, the loss-prediction
head, the t-SNE and feature-knowledge commands), reads an :class:`EncoderFeatures` and never knows which encoder
is behind it: the paper's VAE (:class:`~alvae_pl.models.vae_features.VAEFeatures`), the label-aware VAE, a
contrastive encoder trained on the pool (:class:`~alvae_pl.models.contrastive_features.ContrastiveFeatures`) or a
pretrained image model (:class:`~alvae_pl.models.pretrained_features.PretrainedFeatures`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn


class EncoderFeatures(nn.Module, ABC):
    """Task-agnostic features V(u) of uint8 images, their weight ``alpha`` and whether blocks are normalised.

    A plain ``nn.Module`` handed to each place where eq. 6 applies. A subclass reads or builds its encoder in
    :meth:`load` (called once the data's shape is known; later calls only move it) and computes V(u) in
    :meth:`encode`. The encoder only provides features: the module stays in eval mode whatever its owner switches
    to, and :meth:`forward` runs :meth:`encode` under ``torch.inference_mode``.

    In configs the slot keeps its historical name ``vae`` (``features.vae``, ``model.init_args.vae``) and takes any
    subclass through ``class_path``; a bare mapping without ``class_path`` means the paper's VAE.

    Args:
        alpha: weight of V(u) beside the task features. Without ``normalize`` the two blocks keep their own scales,
            as in the paper, so a given alpha weighs the encoder differently on every data set and round.
        normalize: for distances (core-set, MedAL, ...): divide the task and encoder blocks each by its mean L2 norm
            over the embedded rows before weighting, so that ``alpha = 1`` gives them equal typical lengths. The
            loss-prediction head learns its own scale and refuses it.
    """

    def __init__(self, alpha: float = 1.0, normalize: bool = False) -> None:
        super().__init__()
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise ValueError(f"the encoder features' alpha must be a finite number >= 0, got {alpha}")
        self.alpha = alpha
        self.normalize = normalize

    @abstractmethod
    def load(
        self,
        num_channels: int,
        image_size: int,
        device: torch.device | str | None = None,
        *,
        num_classes: int | None = None,
        task: str | None = None,
    ) -> EncoderFeatures:
        """Reads or builds the encoder for images ``[B, num_channels, image_size, image_size]`` (once; later calls
        only move it to ``device``) and returns ``self``. ``num_classes`` and ``task`` describe the labels, which
        only a label-aware encoder needs.

        Raises:
            FileNotFoundError: the encoder's checkpoint or weights are missing (the message says how to get them).
            ValueError: an encoder made for images of another shape.
        """

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """``D``, the size of V(u) (known once loaded)."""

    @abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """V(u), unweighted: float ``[B, D]`` of uint8 images ``[B, C, H, W]``. Called by :meth:`forward` under
        inference mode, after :meth:`load`."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The settings, as plain values (for hyper-parameter records and checkpoints)."""

    @property
    def name(self) -> str:
        """A short human-readable name for tables and figures."""
        return type(self).__name__

    @property
    def latent_dim(self) -> int:
        """The historical name of :attr:`feature_dim` (the VAE's latent size)."""
        return self.feature_dim

    def forward(self, images: Tensor) -> Tensor:
        """V(u), unweighted: float32 ``[B, D]`` of uint8 images ``[B, C, H, W]``, without gradient."""
        with torch.inference_mode():
            features = self.encode(images).float()
        # Inference tensors can be neither saved for backward (the loss-prediction head trains on top of these) nor
        # changed in place by a consumer: an ordinary copy, [B, D], costs nothing beside the encoder.
        return features.clone()

    def weighted(self, images: Tensor) -> Tensor:
        """``alpha * V(u)``, float ``[B, D]``."""
        return self.alpha * self(images)

    def train(self, mode: bool = True) -> EncoderFeatures:
        """Stays in eval mode whatever its owner switches to: batch norm keeps the statistics it was trained with."""
        return super().train(False)
