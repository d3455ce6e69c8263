"""BALD with Monte-Carlo dropout (Houlsby et al., 2011; Gal, Islam and Ghahramani, 2017): the images whose label
the model's weights disagree about most."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alvae_pl.acquisition.entropy import prediction_entropy
from alvae_pl.acquisition.heuristic import Heuristic, Selection, top_scoring

if TYPE_CHECKING:
    from alvae_pl.models.task_model import TaskModel


def _entropy_of_probabilities(probabilities: Tensor, multilabel: bool) -> Tensor:
    """``[...]`` from probabilities ``[..., K]``: softmax entropy, or the sum of binary entropies (nats)."""
    if multilabel:
        p = probabilities
        return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)).sum(dim=-1)
    return -torch.special.xlogy(probabilities, probabilities).sum(dim=-1)


def mutual_information(logits: Tensor, multilabel: bool) -> Tensor:
    """BALD's score ``[N]`` from the logits of ``T`` stochastic passes ``[T, N, K]``, in nats.

    ``I(y; w | x) = H[mean_t p_t(y | x)] - mean_t H[p_t(y | x)]``: the entropy of the averaged prediction minus the
    average entropy of each pass's prediction. It is large where each pass is confident but the passes disagree.
    Multi-label: the same for each finding's 0/1 label, summed over findings (findings independent given the image
    and the weights, as ``prediction_entropy`` treats them). Never negative (rounding below 0 is clipped).
    """
    logits = logits.float()
    samples, rows, classes = logits.shape
    probabilities = logits.sigmoid() if multilabel else logits.softmax(dim=-1)
    total = _entropy_of_probabilities(probabilities.mean(dim=0), multilabel)
    expected = prediction_entropy(logits.reshape(samples * rows, classes), multilabel).view(samples, rows).mean(dim=0)
    return (total - expected).clamp_min(0)


class BALD(Heuristic):
    """Labels the ``budget`` unlabeled images with the highest BALD mutual information (``mutual_information``).

    Needs a task model trained with dropout before its classifier (``model.dropout`` > 0). At acquisition the model
    stays in eval mode (batch norm uses its running statistics) and ``mc_samples`` passes of the classifier each
    drop the embedding's units with a mask of their own: pass ``t`` keeps unit ``j`` when ``mask[t, j]``, scaled by
    ``1 / (1 - dropout)`` as in training. Dropout before a linear layer is a random choice of the layer's weight
    columns, so each pass is one sample of the classifier's weights, and all images see the same ``mc_samples``
    weight samples ("consistent" MC dropout, Kirsch et al., 2019). The masks come from the round's generator:
    an image's score then depends neither on the batch or DDP rank that embeds it nor on whether the run was
    resumed. The backbone runs once per image; only the classifier runs ``mc_samples`` times.

    Args:
        mc_samples: stochastic passes per image (``T``); at least 2.
    """

    key = "mutual_information"

    def __init__(self, mc_samples: int = 20) -> None:
        if mc_samples < 2:
            raise ValueError(f"BALD needs at least 2 stochastic passes (mc_samples), got {mc_samples}")
        self.mc_samples = mc_samples
        self._mask_seed: int | None = None
        self._masks: Tensor | None = None

    def check_model(self, model: TaskModel) -> None:
        if model.hparams.get("dropout", 0.0) <= 0:
            raise ValueError(
                "BALD samples dropout masks, but the task model has no dropout: set model.init_args.dropout "
                "(e.g. 0.5, as in configs/heuristics/bald.yaml)"
            )

    def start_acquisition(self, generator: torch.Generator) -> None:
        self._mask_seed = int(torch.randint(2**62, (1,), generator=generator))
        self._masks = None

    def dropout_masks(self, dropout: float, width: int, device: torch.device) -> Tensor:
        """This acquisition's scaled keep-masks, float ``[mc_samples, width]``: ``0`` or ``1 / (1 - dropout)``."""
        if self._mask_seed is None:
            raise RuntimeError("BALD.start_acquisition must run before embed")
        if self._masks is None or self._masks.shape[1] != width or self._masks.device != device:
            generator = torch.Generator().manual_seed(self._mask_seed)
            keep = torch.rand(self.mc_samples, width, generator=generator) >= dropout
            self._masks = (keep.float() / (1 - dropout)).to(device)
        return self._masks

    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        embedding = model.forward_features(images).embedding  # [B, D]
        masks = self.dropout_masks(model.hparams.dropout, embedding.shape[1], embedding.device)  # [T, D]
        logits = model.classify(embedding.unsqueeze(0) * masks.unsqueeze(1).to(embedding.dtype))  # [T, B, K]
        return {self.key: mutual_information(logits, multilabel=model.task == "multilabel")}

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        return top_scoring(candidates[self.key], budget)
