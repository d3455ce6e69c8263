"""The VAE's training objective: the negative ELBO of the paper's eq. 5, per image in nats."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from alvae_pl.models.latent_prior import kl_to_standard_normal


def reconstruction_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Bernoulli negative log-likelihood of the pixels, summed over each image.

    Args:
        logits: float ``[B, C, H, W]``, decoder output before the sigmoid.
        target: float ``[B, C, H, W]`` in [0, 1].

    Returns:
        float ``[B]``, in nats.
    """
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(dim=1)


def vae_loss(
    logits: Tensor, target: Tensor, mean: Tensor, logvar: Tensor, kl_weight: float = 1.0, kl: Tensor | None = None
) -> dict[str, Tensor]:
    """Negative ELBO (eq. 5) with a weighted KL term, averaged over the batch.

    Args:
        kl: the per-image KL term ``[B]`` under the model's prior; ``None``: the standard normal's, in closed form.

    Returns:
        ``{"loss", "reconstruction", "kl"}``, scalars; ``loss = reconstruction + kl_weight * kl``.
    """
    reconstruction = reconstruction_loss(logits, target).mean()
    kl = (kl_to_standard_normal(mean, logvar) if kl is None else kl).mean()
    return {"loss": reconstruction + kl_weight * kl, "reconstruction": reconstruction, "kl": kl}
