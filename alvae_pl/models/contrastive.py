"""A contrastive encoder learned on the pool without labels (SimCLR, Chen et al., 2020): task-agnostic features.

Trained once per data set on the whole pool like the paper's VAE (``python train.py fit --config
configs/contrastive_<data>.yaml``, ``data.train_on: pool``); an active-learning run then reads its backbone through
:class:`~alvae_pl.models.contrastive_features.ContrastiveFeatures`.

Written here rather than taken from lightly: lightly 1.6 depends on ``pytorch_lightning`` (the old package name, a
second copy of Lightning beside ``lightning``) and on ``hydra-core``, for what is here a 10-line loss and a few
batched tensor operations (:mod:`~alvae_pl.models.view_augmentation`).
"""

from __future__ import annotations

import math

import lightning
import torch
from torch import Tensor

from alvae_pl.models.checkpoint_file import EncoderCheckpointFile
from alvae_pl.models.contrastive_encoder import Backbone, ContrastiveEncoder
from alvae_pl.models.nt_xent import nt_xent_loss
from alvae_pl.models.optimizer_settings import check_optimizer_settings
from alvae_pl.models.view_augmentation import ViewAugmentation

#: Added to the seeds of validation views (by batch index) to keep them apart from training views (by global step).
_VALIDATION_SEEDS = 2**31


def view_seed(init_seed: int, counter: int) -> int:
    """The seed of one batch's views: distinct for every (run seed, counter) below 2**32."""
    return init_seed % 2**31 * 2**32 + counter


class ContrastiveModel(lightning.LightningModule):
    """SimCLR on uint8 pool images: two random views of each image, NT-Xent between their projections.

    Each step draws two views of every image of the batch (:class:`ViewAugmentation`, on the device, from a
    generator seeded by ``(init_seed, global_step)``: a resumed run draws the views an uninterrupted one would),
    passes the ``2B`` views through the encoder as one batch (its batch norm sees both views, as SimCLR's global
    batch norm does) and minimises :func:`~alvae_pl.models.nt_xent.nt_xent_loss`. Adam replaces SimCLR's
    LARS, which pays only at batch sizes in the thousands. Validation reports the same loss on views seeded by
    batch index, the same every epoch. Under DDP each process contrasts its own batch (no gathered negatives): the
    effective number of negatives is the per-process batch's.

    Args:
        num_channels: image channels; linked from the data.
        image_size: image height and width; linked from the data.
        backbone: ``cnn`` (small and fast; the default) or ``resnet18`` (small stem).
        projection_dim: size of the projection head's output.
        temperature: NT-Xent temperature (SimCLR: 0.5 at small batches, 0.1 at large ones).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        init_seed: seeds the initial weights and the views; linked from ``seed_everything``.

    The remaining arguments (``crop_scale``, ``aspect_ratio``, ``brightness``, ``contrast``, ``jitter_p``,
    ``blur_sigma``, ``blur_p``, ``noise_std``, ``noise_p``, ``horizontal_flip``, ``rotation``) set the views, as
    :class:`~alvae_pl.models.view_augmentation.ViewAugmentation` documents them; flips and rotations are off by
    default.
    """

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int = 28,
        backbone: Backbone = "cnn",
        projection_dim: int = 128,
        temperature: float = 0.5,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        init_seed: int = 0,
        crop_scale: tuple[float, float] = (0.35, 1.0),
        aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        brightness: float = 0.4,
        contrast: float = 0.4,
        jitter_p: float = 0.8,
        blur_sigma: tuple[float, float] = (0.1, 1.0),
        blur_p: float = 0.5,
        noise_std: float = 0.05,
        noise_p: float = 0.5,
        horizontal_flip: bool = False,
        rotation: float = 0.0,
    ) -> None:
        super().__init__()
        if num_channels < 1 or not 16 <= image_size <= 512:
            raise ValueError(f"expected 1+ channels and 16 to 512 px images, got {num_channels} and {image_size}")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        if projection_dim < 1:
            raise ValueError(f"projection_dim must be at least 1, got {projection_dim}")
        check_optimizer_settings(lr, weight_decay)
        self.save_hyperparameters()
        self.num_channels = num_channels
        self.image_size = image_size
        self.temperature = temperature
        self.init_seed = init_seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.encoder = ContrastiveEncoder(num_channels, backbone, projection_dim)
        self.views = ViewAugmentation(
            crop_scale=crop_scale, aspect_ratio=aspect_ratio, brightness=brightness, contrast=contrast,
            jitter_p=jitter_p, blur_sigma=blur_sigma, blur_p=blur_p, noise_std=noise_std, noise_p=noise_p,
            horizontal_flip=horizontal_flip, rotation=rotation,
        )  # fmt: skip

    @property
    def embedding_dim(self) -> int:
        """Size of the backbone's embedding, the task-agnostic feature."""
        return self.encoder.embedding_dim

    def _check(self, images: Tensor) -> None:
        expected = (self.num_channels, self.image_size, self.image_size)
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"the contrastive encoder was built for uint8 images [B, {', '.join(map(str, expected))}], got "
                f"{images.dtype} {list(images.shape)}; train one on this data set"
            )

    def embed(self, images: Tensor) -> Tensor:
        """The backbone's embedding ``h``: float ``[B, embedding_dim]`` of uint8 images ``[B, C, H, W]``. Call in
        eval mode (batch norm's running statistics)."""
        self._check(images)
        return self.encoder.embed(images)

    def forward(self, images: Tensor) -> Tensor:
        """The projection ``z``: float ``[B, projection_dim]`` of uint8 images ``[B, C, H, W]``."""
        self._check(images)
        return self.encoder(images)

    def pair_loss(self, images: Tensor, seed: int) -> Tensor:
        """NT-Xent of two views of each of the uint8 ``images`` ``[B, C, H, W]``, drawn from ``seed``."""
        generator = torch.Generator(device=images.device).manual_seed(seed)
        first, second = self.views(images, generator), self.views(images, generator)
        z = self(torch.cat([first, second]))
        return nt_xent_loss(z[: len(images)], z[len(images) :], self.temperature)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """``batch = (uint8 [B, C, H, W], targets)``; targets are ignored."""
        images = batch[0]
        loss = self.pair_loss(images, view_seed(self.init_seed, self.global_step))
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """``batch = (uint8 [B, C, H, W], targets)``; targets are ignored."""
        images = batch[0]
        loss = self.pair_loss(images, view_seed(self.init_seed, _VALIDATION_SEEDS + batch_idx))
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(images), sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def load_contrastive_encoder(
    path: str, num_channels: int, image_size: int, device: torch.device | str = "cpu"
) -> ContrastiveModel:
    """A trained contrastive model, frozen and in eval mode, after checking it fits the data.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a contrastive checkpoint, or it was trained on images of another shape.
    """
    file = EncoderCheckpointFile(
        path, "contrastive encoder", "`python train.py fit --config configs/contrastive_<data>.yaml`"
    )
    hparams, state = file.read()
    if not is_contrastive_state(state):
        raise ValueError(file.not_ours)
    file.check_images(hparams, num_channels, image_size)
    try:
        model = ContrastiveModel.load_from_checkpoint(path, map_location=device, weights_only=True)
    except RuntimeError as error:  # state_dict keys or shapes that do not match the hyper-parameters
        raise ValueError(f"{file.not_ours} ({str(error).splitlines()[0]})") from error
    return model.eval().requires_grad_(False)


def is_contrastive_state(state: dict[str, object]) -> bool:
    """Whether a checkpoint's ``state_dict`` is a :class:`ContrastiveModel`'s (it has the projection head)."""
    return any(key.startswith("encoder.projection.") for key in state)
