"""A label-aware VAE: the semi-supervised M2 model of Kingma, Rezende, Mohamed and Welling (NeurIPS 2014).

The paper's future work asks for "class-conditional VAEs ... retrained along with the task model after each
labeling iteration". M2 is that model for a pool that is mostly unlabeled: the latent code is conditioned on the
label, ``q(z | x, y)`` and ``p(x | y, z)``, and a classifier ``q(y | x)`` stands in for the label where nobody knows
it. Its loss, per image:

- labeled ``(x, y)``: the negative ELBO ``-log p(x | y, z) + KL(q(z | x, y) || N(0, I))`` plus
  ``classifier_weight * CE(q(y | x), y)`` (Kingma's alpha term, which makes the classifier learn from the labels);
- unlabeled ``x``, multi-class, ``marginalize: exact``: the label marginalised under the classifier,
  ``sum_y q(y | x) * negative ELBO(x, y) - H(q(y | x))``, exactly as in M2, with one decoder pass per class;
- unlabeled ``x``, ``marginalize: mean_field`` (always for multi-label, whose K 0/1 findings make 2^K label vectors,
  16,384 for ChestMNIST, too many to sum): the encoder and decoder see the classifier's belief (the softmax, or the
  finding probabilities) in place of the one-hot or 0/1 vector, i.e. the expected label, with the same entropy
  bonus ``H(q(y | x))``; one decoder pass, the cost of the paper's VAE. Exact marginalisation costs K passes per
  unlabeled image: about 10x the paper VAE's training time on digits or MNIST, affordable on a GPU, slow on a CPU.

V(u), the feature eq. 6 concatenates, is the posterior mean under the classifier's belief about the label, with
that belief beside it: ``[sum_y q(y | x) * mean(x, y), s * q(y | x)]`` (multi-class) or ``[mean(x, p), s * p]``
(multi-label), ``latent_dim + K`` numbers. M2 leaves in z what the label does not explain (the "style"), so the
class knowledge the labels bring lives in the belief. ``s = sqrt(latent_dim)`` gives the belief (length about 1
for a confident prediction) the typical length of a mean under the N(0, I) prior, so that neither block drowns
the other in distances. The same function serves labeled and unlabeled images, so that distances between them
stay comparable.

Same convolutions as the paper's VAE (:mod:`alvae_pl.models.vae`); the label (one-hot or 0/1 findings) joins the
flattened encoder map before the mean and log-variance layers and the latent code before the decoder.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alvae_pl.data.image_data import TaskKind
from alvae_pl.models.latent_prior import kl_to_standard_normal
from alvae_pl.models.vae_loss import reconstruction_loss
from alvae_pl.models.vae_network import DECODER_START_CHANNELS, build_decoder, build_encoder, encoded_shape


class LabelAwareVAE(nn.Module):
    """M2 on the paper VAE's convolutions, for multi-class or multi-label uint8 images.

    Args:
        num_channels: image channels.
        image_size: image height and width in pixels.
        num_classes: classes (multi-class) or findings (multi-label).
        task: ``multiclass`` or ``multilabel``.
        latent_dim: size of z, i.e. of V(u).
        classifier_weight: weight of the classifier's cross-entropy on labeled images, per image, against a
            negative ELBO of some hundred nats per image (Kingma et al. use 0.1 x the data set size, over a sum). On
            digits with 100 labels, 500 gave the classifier 0.89 test accuracy after 4 epochs, 50 gave 0.86.
        marginalize: ``exact`` or ``mean_field``, how unlabeled images treat the unknown label (module docstring);
            multi-label data is always mean-field.
    """

    def __init__(
        self,
        num_channels: int,
        image_size: int,
        num_classes: int,
        task: TaskKind = "multiclass",
        latent_dim: int = 32,
        classifier_weight: float = 500.0,
        marginalize: Literal["exact", "mean_field"] = "exact",
    ) -> None:
        super().__init__()
        if marginalize not in ("exact", "mean_field"):
            raise ValueError(f"marginalize must be exact or mean_field, got {marginalize!r}")
        if task not in ("multiclass", "multilabel"):
            raise ValueError(f"task must be multiclass or multilabel, got {task!r}")
        if num_classes < 2 and task == "multiclass":
            raise ValueError(f"a multi-class label-aware VAE needs at least 2 classes, got {num_classes}")
        self.num_channels = num_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.task = task
        self.latent_dim = latent_dim
        self.classifier_weight = classifier_weight
        self.marginalize = marginalize if task == "multiclass" else "mean_field"
        self.encoder = build_encoder(num_channels)
        shape = encoded_shape(self.encoder, num_channels, image_size)
        flat = shape[0] * shape[1] * shape[2]
        self.classifier = nn.Linear(flat, num_classes)
        self.to_mean = nn.Linear(flat + num_classes, latent_dim)
        self.to_logvar = nn.Linear(flat + num_classes, latent_dim)
        self.decoded_shape = (DECODER_START_CHANNELS, shape[1], shape[2])
        self.from_latent = nn.Linear(latent_dim + num_classes, DECODER_START_CHANNELS * shape[1] * shape[2])
        self.decoder = build_decoder(num_channels, image_size)

    @property
    def feature_dim(self) -> int:
        """Size of V(u): the latent mean and the label belief."""
        return self.latent_dim + self.num_classes

    # ------------------------------------------------------------------------------------------ pieces
    def _hidden(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 ``[B, C, H, W]`` -> (pixels in [0, 1] ``[B, C, H, W]``, flattened encoder map ``[B, F]``)."""
        expected = (self.num_channels, self.image_size, self.image_size)
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"the label-aware VAE takes uint8 [B, {self.num_channels}, {self.image_size}, {self.image_size}] "
                f"images, got {images.dtype} {list(images.shape)}"
            )
        x = images.float() / 255
        return x, self.encoder(x).flatten(1)

    def _label_vectors(self, targets: Tensor) -> Tensor:
        """Targets (``[B]`` class indices or ``[B, K]`` 0/1) -> float ``[B, K]`` label vectors."""
        if self.task == "multiclass":
            return F.one_hot(targets.long(), self.num_classes).float()
        return targets.float()

    def _posterior(self, hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        joint = torch.cat([hidden, labels], dim=1)
        return self.to_mean(joint), self.to_logvar(joint)

    def _negative_elbo(self, x: Tensor, hidden: Tensor, labels: Tensor, generator: torch.Generator | None) -> Tensor:
        """``-log p(x | y, z) + KL(q(z | x, y) || N(0, I))`` per image ``[B]``, one reparameterised sample of z."""
        mean, logvar = self._posterior(hidden, labels)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + noise * torch.exp(0.5 * logvar)
        logits = self.decoder(self.from_latent(torch.cat([z, labels], dim=1)).view(-1, *self.decoded_shape))
        return reconstruction_loss(logits, x) + kl_to_standard_normal(mean, logvar)

    def label_probabilities(self, hidden: Tensor) -> Tensor:
        """The classifier's belief ``q(y | x)``: softmax ``[B, K]`` (multi-class) or per-finding sigmoid."""
        logits = self.classifier(hidden)
        return logits.softmax(dim=1) if self.task == "multiclass" else logits.sigmoid()

    # ------------------------------------------------------------------------------------------ loss
    def loss(
        self, images: Tensor, targets: Tensor, labeled: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The M2 objective of a batch, averaged over its images (see the module docstring).

        Args:
            images: uint8 ``[B, C, H, W]``.
            targets: ``[B]`` class indices or ``[B, K]`` 0/1 findings; read only where ``labeled``.
            labeled: bool ``[B]``: whose label is known.
            generator: draws the reparameterisation noise (seeded by the caller, for exact resumes).

        Returns:
            ``{"loss", "labeled", "unlabeled", "classifier"}``: scalars; ``loss`` is what to minimise, the others
            are the summed parts divided by the batch size.
        """
        x, hidden = self._hidden(images)
        size = len(images)
        zero = x.new_zeros(())
        parts = {"labeled": zero, "unlabeled": zero, "classifier": zero}
        if bool(labeled.any()):
            known = targets[labeled]
            elbo = self._negative_elbo(x[labeled], hidden[labeled], self._label_vectors(known), generator)
            logits = self.classifier(hidden[labeled])
            if self.task == "multiclass":
                cross_entropy = F.cross_entropy(logits, known.long(), reduction="none")
            else:
                cross_entropy = F.binary_cross_entropy_with_logits(logits, known.float(), reduction="none").sum(1)
            parts["labeled"] = elbo.sum() / size
            parts["classifier"] = self.classifier_weight * cross_entropy.sum() / size
        unlabeled = ~labeled
        if bool(unlabeled.any()):
            parts["unlabeled"] = self._marginal_negative_elbo(x[unlabeled], hidden[unlabeled], generator).sum() / size
        return {"loss": parts["labeled"] + parts["classifier"] + parts["unlabeled"], **parts}

    def _marginal_negative_elbo(self, x: Tensor, hidden: Tensor, generator: torch.Generator | None) -> Tensor:
        """``[U]``: the unlabeled images' term, the label marginalised (multi-class) or mean-field (multi-label)."""
        belief = self.label_probabilities(hidden)
        if self.marginalize == "exact":
            count, classes = len(x), self.num_classes
            # Every image with every class, in one batch: rows i * K + k.
            labels = torch.eye(classes, device=x.device).repeat(count, 1)
            elbo = self._negative_elbo(
                x.repeat_interleave(classes, dim=0), hidden.repeat_interleave(classes, dim=0), labels, generator
            ).view(count, classes)
            entropy = -(belief * belief.clamp_min(1e-12).log()).sum(dim=1)
            return (belief * elbo).sum(dim=1) - entropy
        if self.task == "multiclass":
            entropy = -(belief * belief.clamp_min(1e-12).log()).sum(dim=1)
        else:
            entropy = F.binary_cross_entropy(belief, belief, reduction="none").sum(dim=1)  # sum_k H(p_k)
        return self._negative_elbo(x, hidden, belief, generator) - entropy

    # ------------------------------------------------------------------------------------------ features
    def features(self, images: Tensor) -> Tensor:
        """V(u): float ``[B, latent_dim + K]``, the posterior mean under the classifier's belief about the label and
        that belief (module docstring). Call in eval mode (batch-norm running statistics)."""
        _, hidden = self._hidden(images)
        belief = self.label_probabilities(hidden)
        scale = self.latent_dim**0.5
        if self.task == "multilabel":
            return torch.cat([self._posterior(hidden, belief)[0], scale * belief], dim=1)
        count, classes = len(images), self.num_classes
        labels = torch.eye(classes, device=images.device).repeat(count, 1)
        means = self._posterior(hidden.repeat_interleave(classes, dim=0), labels)[0].view(count, classes, -1)
        return torch.cat([(belief.unsqueeze(2) * means).sum(dim=1), scale * belief], dim=1)
