"""Task-agnostic features from a contrastive (SimCLR) encoder trained on the pool, as :class:`EncoderFeatures`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from alvae_pl.models.contrastive import ContrastiveModel, load_contrastive_encoder
from alvae_pl.models.encoder_features import EncoderFeatures


class ContrastiveFeatures(EncoderFeatures):
    """V(u) = the contrastive encoder's backbone embedding ``h`` (before the projection head, as SimCLR recommends),
    usable wherever the VAE's features are: a feature space's ``vae`` slot, the loss head's ``model.init_args.vae``,
    the t-SNE and ``experiment.py features`` commands.

    Args:
        checkpoint: written by ``python train.py fit --config configs/contrastive_<data>.yaml``.
        alpha: weight of V(u) beside the task features (eq. 6).
        normalize: for distances: each block divided by its mean norm before weighting (see ``EncoderFeatures``).
            Recommended here: the embedding's scale (a ReLU network's pooled activations) bears no relation to the
            task features'.

    Example YAML::

        features:
          vae:
            class_path: alvae_pl.models.contrastive_features.ContrastiveFeatures
            init_args: {checkpoint: lightning_logs/contrastive_digits/seed_0/checkpoints/last.ckpt, normalize: true}
    """

    def __init__(self, checkpoint: str, alpha: float = 1.0, normalize: bool = False) -> None:
        super().__init__(alpha=alpha, normalize=normalize)
        self.checkpoint = checkpoint
        self.encoder: ContrastiveModel | None = None

    def load(
        self,
        num_channels: int,
        image_size: int,
        device: torch.device | str | None = None,
        *,
        num_classes: int | None = None,
        task: str | None = None,
    ) -> ContrastiveFeatures:
        """Reads the encoder once (later calls only move it), after checking it was trained on this data's shape."""
        if self.encoder is None:
            self.encoder = load_contrastive_encoder(self.checkpoint, num_channels, image_size)
        elif (self.encoder.num_channels, self.encoder.image_size) != (num_channels, image_size):
            raise ValueError(
                f"the contrastive encoder at {self.checkpoint} encodes {self.encoder.num_channels}-channel "
                f"{self.encoder.image_size}px images; the data's are {num_channels}-channel {image_size}px"
            )
        return self.to(device) if device is not None else self

    @property
    def feature_dim(self) -> int:
        return self._encoder().embedding_dim

    @property
    def name(self) -> str:
        return f"contrastive h(u), {self._encoder().hparams.backbone}"

    def encode(self, images: Tensor) -> Tensor:
        """float ``[B, embedding_dim]`` of uint8 images ``[B, C, H, W]``."""
        return self._encoder().embed(images)

    def describe(self) -> dict[str, Any]:
        return {"encoder": "contrastive", "checkpoint": self.checkpoint, "alpha": self.alpha,
                "normalize": self.normalize}  # fmt: skip

    def _encoder(self) -> ContrastiveModel:
        if self.encoder is None:
            raise RuntimeError("ContrastiveFeatures.load(num_channels, image_size) must be called first")
        return self.encoder
