"""The mixture prior: its KL estimate against closed forms and a many-sample reference, and a VAE trained with it."""

from __future__ import annotations

from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from torch.utils.data import DataLoader, TensorDataset

from alvae_pl.models.latent_prior import MixturePrior, kl_to_standard_normal
from alvae_pl.models.vae import VAE, load_vae_encoder

SAMPLES = 200_000


def posterior_samples(mean: torch.Tensor, logvar: torch.Tensor, seed: int) -> torch.Tensor:
    """``[SAMPLES, D]`` draws from N(mean, exp(logvar)), ``mean`` and ``logvar`` ``[D]``."""
    noise = torch.randn(SAMPLES, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return mean + noise * torch.exp(0.5 * logvar)


def estimate(prior: MixturePrior, mean: torch.Tensor, logvar: torch.Tensor, seed: int = 0) -> float:
    """The mean of the prior's one-sample KL estimates over many posterior samples."""
    z = posterior_samples(mean, logvar, seed)
    with torch.no_grad():
        return prior.kl(mean.expand(SAMPLES, -1), logvar.expand(SAMPLES, -1), z).mean().item()


def one_gaussian(mean: torch.Tensor, logvar: torch.Tensor) -> MixturePrior:
    prior = MixturePrior(len(mean), components=1).double()
    with torch.no_grad():
        prior.means.copy_(mean[None])
        prior.logvars.copy_(logvar[None])
    return prior


def test_with_one_standard_component_the_estimate_averages_to_the_closed_form() -> None:
    mean, logvar = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), torch.tensor([0.2, -0.5, 0.0]).double()
    exact = kl_to_standard_normal(mean[None], logvar[None]).item()
    assert estimate(one_gaussian(torch.zeros(3).double(), torch.zeros(3).double()), mean, logvar) == pytest.approx(
        exact, abs=0.02
    )


def test_with_one_component_anywhere_the_estimate_averages_to_the_gaussian_kl() -> None:
    mean, logvar = torch.tensor([0.3, 1.0]).double(), torch.tensor([-1.0, 0.5]).double()
    prior_mean, prior_logvar = torch.tensor([1.0, -0.5]).double(), torch.tensor([0.7, -0.3]).double()
    # KL between diagonal Gaussians, per dimension: 0.5 (log s2/s1 + (s1 + (m1 - m2)^2) / s2 - 1).
    exact = (
        0.5 * (prior_logvar - logvar + (logvar.exp() + (mean - prior_mean) ** 2) / prior_logvar.exp() - 1).sum().item()
    )
    assert estimate(one_gaussian(prior_mean, prior_logvar), mean, logvar) == pytest.approx(exact, abs=0.02)


def test_a_three_component_mixture_matches_a_many_sample_reference() -> None:
    torch.manual_seed(0)
    prior = MixturePrior(latent_dim=2, components=3).double()
    with torch.no_grad():
        prior.logvars.copy_(torch.tensor([[0.0, -1.0], [0.5, 0.5], [-0.5, 0.2]]))
        prior.weight_logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
    mean, logvar = torch.tensor([0.4, -0.2]).double(), torch.tensor([-0.8, -0.4]).double()
    # Reference: E_q[log q(z) - log p(z)] over numpy's own draws, densities from scipy.
    rng = np.random.default_rng(1)
    m, s = mean.numpy(), np.exp(0.5 * logvar.numpy())
    z = m + rng.standard_normal((SAMPLES, 2)) * s
    log_q = norm.logpdf(z, m, s).sum(axis=1)
    means, scales = prior.means.detach().numpy(), np.exp(0.5 * prior.logvars.detach().numpy())
    log_weights = torch.log_softmax(prior.weight_logits.detach(), 0).numpy()
    log_p = logsumexp(norm.logpdf(z[:, None, :], means, scales).sum(axis=2) + log_weights, axis=1)
    reference = float(np.mean(log_q - log_p))
    assert estimate(prior, mean, logvar) == pytest.approx(reference, abs=0.02)
    assert reference > 0


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, np.ndarray]:
    data = load_digits()
    images = torch.tensor(data.images[:1000], dtype=torch.float32)[:, None] / 16
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    return (images * 255).round().to(torch.uint8), data.target[:1000]


def test_mixture_prior_vae_trains_saves_loads_and_its_features_separate_digit_classes(
    tmp_path: Path, digits: tuple[torch.Tensor, np.ndarray]
) -> None:
    images, labels = digits
    lightning.seed_everything(0, verbose=False)
    model = VAE(num_channels=1, image_size=28, prior="mixture", components=10)
    optimizer = model.configure_optimizers()
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.005, 0.0]  # no decay on the prior
    start = model.prior.means.detach().clone()
    trainer = lightning.Trainer(
        accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, DataLoader(TensorDataset(images, torch.as_tensor(labels)), batch_size=32, shuffle=True))
    assert not torch.equal(model.prior.means, start)  # the prior learned too
    assert trainer.callback_metrics["train/kl_epoch"] > 0
    trainer.save_checkpoint(tmp_path / "mixture.ckpt")
    encoder = load_vae_encoder(str(tmp_path / "mixture.ckpt"), num_channels=1, image_size=28)
    assert encoder.prior is not None and torch.equal(encoder.prior.means, model.prior.means)
    with torch.no_grad():
        features = encoder.encode_mean(images).numpy()
    # V(u) is still the posterior mean, and it knows the classes far better than chance (0.1).
    accuracy = cross_val_score(KNeighborsClassifier(5), features, labels, cv=5).mean()
    assert accuracy > 0.6
    assert "prior.means" not in VAE(num_channels=1, image_size=28).state_dict()  # the paper's VAE is unchanged
