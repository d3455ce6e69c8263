"""The vector space the distance-based heuristics measure in: T_f(u), optionally with alpha * V(u) (paper, eq. 6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alvae_pl.acquisition.distances import as_float32, storage_dtype
from alvae_pl.models.vae_features import FeaturesSlot

if TYPE_CHECKING:
    from alvae_pl.data.image_data import ImageData
    from alvae_pl.models.task_model import TaskModel

#: Output names of :meth:`FeatureSpace.embed`.
TASK_KEY = "task"
VAE_KEY = "vae"


class FeatureSpace:
    """Task-model features, alone or concatenated with the task-agnostic features (eq. 6).

    A point ``u`` is represented by ``[T_f(u), alpha * V(u)]``, where ``T_f(u)`` is the task model's 512-d
    penultimate embedding and ``V(u)`` the task-agnostic features of any encoder
    (:class:`~alvae_pl.models.encoder_features.EncoderFeatures`: the paper's VAE posterior mean by default, or a
    contrastive or pretrained encoder's embedding; it also holds ``alpha`` and whether the blocks are normalised).
    Without ``vae`` it is ``T_f(u)`` alone (eqs. 1 and 2). ``task_weight`` scales the task block: ``task_weight: 0``
    measures in the encoder's space alone, ``[0 * T_f(u), V(u)]``, to isolate what the task-agnostic features
    contribute.

    Args:
        vae: the task-agnostic features, any ``EncoderFeatures`` (``None``: task features only). The key keeps the
            paper's name; a bare mapping is the VAE's settings, a ``class_path`` picks another encoder.
        task_weight: weight of the task block (1: the paper's). 0 leaves the task features out altogether (they
            are then not even computed) and needs ``vae``.

    Example YAML::

        features:
          vae: {checkpoint: lightning_logs/vae_digits/seed_0/checkpoints/last.ckpt, alpha: 1.0, normalize: true}

    or, with a contrastive encoder::

        features:
          vae:
            class_path: alvae_pl.models.contrastive_features.ContrastiveFeatures
            init_args: {checkpoint: lightning_logs/contrastive_digits/seed_0/checkpoints/last.ckpt, normalize: true}
    """

    def __init__(self, vae: FeaturesSlot | None = None, task_weight: float = 1.0) -> None:
        if not task_weight >= 0 or task_weight == float("inf"):
            raise ValueError(f"task_weight must be a finite number >= 0, got {task_weight}")
        if task_weight == 0 and vae is None:
            raise ValueError("task_weight 0 leaves no features: give the feature space a vae, or raise task_weight")
        self.vae = vae
        self.task_weight = task_weight

    @property
    def uses_vae(self) -> bool:
        return self.vae is not None

    @property
    def normalize(self) -> bool:
        """Whether each block is divided by its mean norm before weighting (a setting of the VAE features)."""
        return self.vae is not None and self.vae.normalize

    def setup(self, data: ImageData, device: torch.device) -> None:
        """Loads the task-agnostic encoder, if any, checking it was made for this data's shape."""
        if self.vae is not None:
            self.vae.load(data.num_channels, data.image_size, device, num_classes=data.num_classes, task=data.task)

    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        """Features of a batch.

        Args:
            model: the task model, in eval mode.
            images: uint8 ``[B, C, H, W]`` on the model's device.

        Returns:
            ``{"task": float [B, 512]}`` (unless ``task_weight`` is 0), plus ``{"vae": float [B, latent_dim]}`` with
            a VAE.
        """
        outputs = {TASK_KEY: model.forward_features(images).embedding.float()} if self.task_weight else {}
        if self.vae is not None:
            outputs[VAE_KEY] = self.vae(images)
        return outputs

    def combine(self, candidates: dict[str, Tensor], labeled: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The points to measure distances between, from the outputs of :meth:`embed`.

        Args:
            candidates: ``{"task": [n, Dt]}`` (unless ``task_weight`` is 0) and, with a VAE, ``{"vae": [n, Dv]}``;
                other keys are ignored.
            labeled: the same for the labeled set, ``[m, ...]``; an empty dict means an empty labeled set.

        Returns:
            ``(candidate_points [n, D], labeled_points [m, D])`` in float32, or in float16 / bfloat16 when the first
            candidate block is in it, with ``D = Dt`` (+ ``Dv`` with a VAE; ``Dv``
            alone with ``task_weight`` 0), on the candidates' device.
        """
        if "index" in labeled and len(labeled["index"]) == 0:  # no labels yet (a cold start): nothing was embedded
            labeled = {}
        weights = {TASK_KEY: self.task_weight} if self.task_weight else {}
        if self.vae is not None:
            weights[VAE_KEY] = self.vae.alpha
        for key in weights:
            if key not in candidates:
                raise ValueError(
                    f"candidate outputs lack {key!r} (have {sorted(candidates)}); "
                    "they must come from this FeatureSpace's embed"
                )
            if labeled and key not in labeled:
                raise ValueError(f"labeled outputs lack {key!r} (have {sorted(labeled)}); pass an empty dict or embed")
        first = candidates[next(iter(weights))]
        blocks = []  # (candidate block [n, d], labeled block [m, d], weight)
        for key, weight in weights.items():
            cand = candidates[key].flatten(1)
            lab = labeled[key].to(first.device).flatten(1) if labeled else cand.new_zeros(0, cand.shape[1])
            if lab.shape[1] != cand.shape[1]:
                raise ValueError(f"{key!r} features are {cand.shape[1]}-d for candidates but {lab.shape[1]}-d labeled")
            blocks.append((cand, lab, weight / _mean_norm(cand, lab) if self.normalize else weight))
        for name, rows in (
            ("candidate", {len(cand) for cand, _, _ in blocks}),
            ("labeled", {len(lab) for _, lab, _ in blocks}),
        ):
            if len(rows) != 1:
                raise ValueError(f"{name} outputs disagree on the number of rows: {sorted(rows)}")
        # Written into one preallocated tensor each: concatenating scaled copies would hold the features twice. Kept in
        # the outputs' precision when it is a low one (``feature_dtype``), so that the points take no more memory.
        dims = [cand.shape[1] for cand, _, _ in blocks]
        layout = {"device": first.device, "dtype": storage_dtype(first)}
        points = torch.empty(len(first), sum(dims), **layout)
        labeled_points = torch.empty(len(blocks[0][1]), sum(dims), **layout)
        start = 0
        for (cand, lab, weight), dim in zip(blocks, dims, strict=True):
            points[:, start : start + dim] = cand
            labeled_points[:, start : start + dim] = lab
            points[:, start : start + dim] *= weight
            labeled_points[:, start : start + dim] *= weight
            start += dim
        return points, labeled_points


def _mean_norm(*blocks: Tensor) -> float:
    """Mean L2 norm of the rows of all ``blocks`` together; 1 when there are no rows or all rows are zero."""
    # Upcast a chunk at a time: a float16 block upcast whole would take twice its own memory.
    norms = torch.cat(
        [
            torch.linalg.vector_norm(as_float32(block[start : start + 65536]), dim=1)
            for block in blocks
            for start in range(0, len(block), 65536)
        ]
        or [torch.empty(0)]
    )
    mean = norms.double().mean().item() if len(norms) else 0.0
    # An all-zero block has nothing to rescale; dividing by 0 would turn it into NaNs.
    return mean if mean > 0 else 1.0
