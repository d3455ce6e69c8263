"""The paper's task-agnostic features of eq. 6: a frozen VAE's posterior mean, as :class:`EncoderFeatures`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from alvae_pl.models.encoder_features import EncoderFeatures
from alvae_pl.models.vae import load_vae_encoder
from alvae_pl.models.vae_network import VAENetwork


class VAEFeatures(EncoderFeatures):
    """V(u), the posterior mean of a frozen VAE encoder, with the weight ``alpha`` it gets beside the task features.

    An :class:`~alvae_pl.models.encoder_features.EncoderFeatures` holding the trained
    :class:`~alvae_pl.models.vae_network.VAENetwork` (the VAE's LightningModule trains it; this only reads it), built
    from the configuration
    and handed to each place where eq. 6 applies: the distance heuristics' feature space
    (``active.heuristic.init_args.features.vae``), the loss-prediction head (``model.init_args.vae``) and the
    t-SNE and feature-knowledge commands. The encoder is read from ``checkpoint`` on first use, checked against
    the data's shape, and stays in eval mode (its batch norm keeps the statistics it was trained with).

    Args:
        checkpoint: a VAE checkpoint written by ``python train.py fit --config configs/vae_<data>.yaml``.
        alpha: weight of V(u) beside the task features. Without ``normalize`` the two blocks keep their own
            scales, as in the paper, so a given alpha weighs the VAE differently on every data set and round.
        normalize: for distances (core-set, MedAL): divide the task and VAE blocks each by its mean L2 norm over
            the embedded rows before weighting, so that ``alpha = 1`` gives them equal typical lengths. The
            loss-prediction head learns its own scale and refuses it.

    Example YAML::

        features:
          vae: {checkpoint: lightning_logs/vae_digits/seed_0/checkpoints/last.ckpt, alpha: 1.0}
    """

    def __init__(self, checkpoint: str, alpha: float = 1.0, normalize: bool = False) -> None:
        super().__init__(alpha=alpha, normalize=normalize)
        self.checkpoint = checkpoint
        self.encoder: VAENetwork | None = None

    def load(
        self,
        num_channels: int,
        image_size: int,
        device: torch.device | str | None = None,
        *,
        num_classes: int | None = None,
        task: str | None = None,
    ) -> VAEFeatures:
        """Reads the encoder once (later calls only move it), after checking it was trained on this data's shape.

        ``num_classes`` and ``task`` describe the labels, which a label-blind VAE does not need (a label-aware one,
        :class:`~alvae_pl.models.label_aware_features.LabelAwareVAEFeatures`, does).

        Raises:
            FileNotFoundError: no checkpoint file.
            ValueError: not a VAE checkpoint, or one trained on images of another shape.
        """
        if self.encoder is None:
            self.encoder = load_vae_encoder(self.checkpoint, num_channels, image_size)
        encoder = self.encoder
        if (encoder.num_channels, encoder.image_size) != (num_channels, image_size):
            raise ValueError(
                f"the VAE at {self.checkpoint} encodes {encoder.num_channels}-channel "
                f"{encoder.image_size}x{encoder.image_size} images; the data's are "
                f"{num_channels}-channel {image_size}x{image_size}"
            )
        return self.to(device) if device is not None else self

    @property
    def feature_dim(self) -> int:
        """``latent_dim`` of the VAE."""
        return int(self._encoder().latent_dim)

    @property
    def name(self) -> str:
        encoder = self.encoder
        prior = "mixture prior" if encoder is not None and encoder.prior is not None else "Gaussian prior"
        return f"VAE V(u), {prior}"

    def encode(self, images: Tensor) -> Tensor:
        """V(u), the posterior mean: float ``[B, latent_dim]`` of uint8 images ``[B, C, H, W]``."""
        return self._encoder().encode_mean(images)

    def describe(self) -> dict[str, Any]:
        """The settings, as plain values (for hyper-parameter records and checkpoints)."""
        return {"checkpoint": self.checkpoint, "alpha": self.alpha, "normalize": self.normalize}

    def _encoder(self) -> VAENetwork:
        if self.encoder is None:
            raise RuntimeError("VAEFeatures.load(num_channels, image_size) must be called first: it reads the VAE")
        return self.encoder


#: The type of the ``vae`` slot in configs (``features.vae``, ``model.init_args.vae``): VAEFeatures first, so that a
#: bare mapping without ``class_path`` keeps meaning the paper's VAE (jsonargparse tries the union in order; the
#: abstract base alone would demand a ``class_path``), then any other :class:`EncoderFeatures` by ``class_path``.
FeaturesSlot = VAEFeatures | EncoderFeatures
