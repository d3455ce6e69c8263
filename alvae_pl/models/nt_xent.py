"""SimCLR's contrastive loss (NT-Xent), the objective of :class:`~alvae_pl.models.contrastive.ContrastiveModel`."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's normalised-temperature cross-entropy over the ``2B`` views of a batch.

    Each view's positive is the other view of its image; its negatives are the ``2B - 2`` views of the other
    images. With cosine similarities ``s``: ``l(i, j) = -log(exp(s_ij / t) / sum_{k != i} exp(s_ik / t))``, averaged
    over all ``2B`` ordered pairs.

    Args:
        z1: float ``[B, P]``, the first views' projections.
        z2: float ``[B, P]``, the second views', in the same image order.
        temperature: ``t`` > 0.

    Returns:
        the scalar loss.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be [B, P], got {list(z1.shape)} and {list(z2.shape)}")
    batch = len(z1)
    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    # A view is never its own negative: masking the diagonal leaves the k != i sum of the formula.
    logits.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)
    return nn.functional.cross_entropy(logits, positives)
