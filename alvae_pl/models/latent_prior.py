"""Priors p(z) over the VAE's latent codes, and the KL term of the ELBO (paper eq. 5) under each.

The paper's VAE uses a standard normal prior and names "a multimodal prior in the VAE, which may do a better job of
modeling relevant differences between points" as future work: ``MixturePrior`` is that prior, a learnable mixture
of Gaussians (as in Dilokthanakul et al., 2016, and the VampPrior's mixture form, Tomczak and Welling, 2018).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

PriorKind = Literal["gaussian", "mixture"]

_LOG_2PI = math.log(2 * math.pi)


def kl_to_standard_normal(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over latent dimensions, in closed form.

    Args:
        mean: float ``[B, D]``.
        logvar: float ``[B, D]``, log-variance of the approximate posterior.

    Returns:
        float ``[B]``, in nats.
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def gaussian_entropy(logvar: Tensor) -> Tensor:
    """Entropy ``[B]`` of diagonal Gaussians with log-variances ``[B, D]``: ``0.5 sum(logvar + log 2 pi e)`` nats."""
    return 0.5 * (logvar + _LOG_2PI + 1.0).sum(dim=1)


def diagonal_gaussian_log_density(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """``log N(z; mean, diag(exp(logvar)))`` summed over the last dimension; shapes broadcast (``[..., D]``)."""
    return -0.5 * ((z - mean).pow(2) * torch.exp(-logvar) + logvar + _LOG_2PI).sum(dim=-1)


class MixturePrior(nn.Module):
    """``p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2))``, with learnable weights, means and variances.

    The KL term ``KL(q(z|x) || p(z)) = -H[q] - E_q[log p(z)]`` has no closed form under a mixture: the entropy of the
    diagonal-Gaussian posterior is exact, and ``E_q[log p(z)]`` is estimated from the reparameterised sample ``z``
    that the decoder also sees (unbiased, and differentiable in the encoder's outputs and the prior's parameters).

    Args:
        latent_dim: ``D``.
        components: ``K``, the number of Gaussians.

    The means start as ``K`` draws from N(0, I) (from the global RNG, which ``seed_everything`` seeds), the
    variances at 1 and the weights equal, so that training starts near the standard normal prior's scale.
    """

    def __init__(self, latent_dim: int, components: int) -> None:
        super().__init__()
        if components < 1:
            raise ValueError(f"a mixture prior needs at least 1 component, got {components}")
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(components, latent_dim))
        self.weight_logits = nn.Parameter(torch.zeros(components))

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p(z)`` ``[B]`` of codes ``[B, D]``."""
        per_component = diagonal_gaussian_log_density(z.unsqueeze(1), self.means, self.logvars)  # [B, K]
        return torch.logsumexp(per_component + torch.log_softmax(self.weight_logits, dim=0), dim=1)

    def kl(self, mean: Tensor, logvar: Tensor, z: Tensor) -> Tensor:
        """One-sample estimate ``[B]`` of ``KL(N(mean, exp(logvar)) || p)``: ``-H[q] - log p(z)``, ``z`` from q."""
        return -gaussian_entropy(logvar) - self.log_prob(z)

    def component_probabilities(self, z: Tensor) -> Tensor:
        """``p(k | z)`` ``[B, K]``: which component explains each code (a clustering of the latent space)."""
        per_component = diagonal_gaussian_log_density(z.unsqueeze(1), self.means, self.logvars)
        return torch.softmax(per_component + torch.log_softmax(self.weight_logits, dim=0), dim=1)
