"""The variational autoencoder whose frozen encoder gives the task-agnostic features V(u) (paper, eq. 6).

Trained once per data set on the whole pool, without labels (``python train.py fit --config
configs/vae_<data>.yaml``); an active-learning run then loads it with :func:`load_vae_encoder`.
"""

from __future__ import annotations

from pathlib import Path

import lightning
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torchvision.utils import make_grid

from alvae_pl.models.latent_prior import MixturePrior, PriorKind, kl_to_standard_normal
from alvae_pl.models.optimizer_settings import check_optimizer_settings

#: Channels of the four stride-2 encoder convolutions; the last one is the smallest feature map's depth.
ENCODER_CHANNELS = (32, 64, 128, 256)
#: Channels of the decoder's first map, at the encoder's smallest resolution. Narrower than the encoder's 256:
#: upsampling 256 channels to full size was two thirds of a training step's time on the CPU.
DECODER_START_CHANNELS = 64
#: Channels of the full-resolution decoder convolutions (the last one maps to the image's channels).
DECODER_CHANNELS = 32
#: How many images the reconstruction grid shows.
GRID_IMAGES = 8


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


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def build_encoder(num_channels: int) -> nn.Sequential:
    """Four 3x3 stride-2 convolutions (``ENCODER_CHANNELS``, BatchNorm, ReLU): uint8-scaled ``[B, C, H, W]`` in
    [0, 1] -> ``[B, 256, h, w]``."""
    channels = (num_channels, *ENCODER_CHANNELS)
    return nn.Sequential(
        *(_conv_block(c_in, c_out, stride=2) for c_in, c_out in zip(channels[:-1], channels[1:], strict=True))
    )


def encoded_shape(encoder: nn.Module, num_channels: int, image_size: int) -> tuple[int, int, int]:
    """``(channels, h, w)`` of the encoder's output; measured, since stride-2 rounding depends on the size."""
    with torch.no_grad():
        return tuple(encoder(torch.zeros(1, num_channels, image_size, image_size)).shape[1:])


def build_decoder(num_channels: int, image_size: int) -> nn.Sequential:
    """From a ``[B, DECODER_START_CHANNELS, h, w]`` map to pixel logits ``[B, C, H, W]``: a bilinear upsampling
    straight to the image size, a convolution, then four size-preserving 3x3 convolutions."""
    # Bilinear (not nearest) so that the few-pixel map does not become visible blocks the 3x3 convolutions
    # cannot smooth out; a size target lands exactly on the input size whatever the stride rounding did.
    return nn.Sequential(
        nn.Upsample(size=(image_size, image_size), mode="bilinear", align_corners=False),
        _conv_block(DECODER_START_CHANNELS, DECODER_CHANNELS, stride=1),
        _conv_block(DECODER_CHANNELS, DECODER_CHANNELS, stride=1),
        _conv_block(DECODER_CHANNELS, DECODER_CHANNELS, stride=1),
        _conv_block(DECODER_CHANNELS, DECODER_CHANNELS, stride=1),
        nn.Conv2d(DECODER_CHANNELS, num_channels, kernel_size=3, padding=1),
    )


class VAE(lightning.LightningModule):
    """Convolutional VAE for uint8 images of 1 or 3 channels and 28 to 224 pixels a side.

    Encoder: four 3x3 stride-2 convolutions (32-64-128-256 channels, BatchNorm, ReLU; 28 px -> 2x2, 64 -> 4x4,
    224 -> 14x14), flattened, then two linear layers to the posterior mean and log-variance.
    Decoder: a linear layer back to the smallest feature map's size (64 channels), a bilinear upsampling straight
    to the input size followed by a convolution, then four size-preserving 3x3 convolutions; a sigmoid gives
    pixels in [0, 1].

    The reconstruction term is the Bernoulli log-likelihood (binary cross-entropy on pixel intensities in
    [0, 1]), summed over pixels: it is the ``log p(x|z)`` of eq. 5 and so is on the same nats-per-image scale as
    the KL term. A summed MSE would be a Gaussian likelihood with a fixed variance that is arbitrary for
    [0, 1] pixels, and a mean MSE would be dwarfed by the KL, which pushes the posterior to the prior and
    leaves V(u) uninformative.

    Args:
        num_channels: image channels (1 grayscale, 3 RGB).
        image_size: image height and width in pixels.
        latent_dim: size of the latent code, i.e. of V(u).
        lr: Adam learning rate (paper: 0.001).
        weight_decay: Adam weight decay (paper: 0.005).
        kl_weight: weight of the KL term (1 is the plain ELBO; a beta-VAE above 1).
        prior: ``gaussian``, the paper's N(0, I) (KL in closed form), or ``mixture``, a learnable mixture of
            ``components`` Gaussians (``MixturePrior``: the multimodal prior of the paper's future work; KL from the
            exact posterior entropy and a one-sample estimate of the cross-entropy). The prior's parameters train
            with the rest, without weight decay (which would pull the components together). V(u) stays the
            posterior mean either way.
        components: the mixture's number of Gaussians (with ``prior: mixture``; e.g. the number of classes).
    """

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int = 28,
        latent_dim: int = 32,
        lr: float = 1e-3,
        weight_decay: float = 5e-3,
        kl_weight: float = 1.0,
        prior: PriorKind = "gaussian",
        components: int = 10,
    ) -> None:
        super().__init__()
        if prior not in ("gaussian", "mixture"):
            raise ValueError(f"unknown prior {prior!r}: use gaussian or mixture")
        if num_channels < 1:
            raise ValueError(f"num_channels must be at least 1, got {num_channels}")
        if not 16 <= image_size <= 512:
            raise ValueError(f"image_size must be between 16 and 512 pixels, got {image_size}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
        check_optimizer_settings(lr, weight_decay)
        self.save_hyperparameters()
        self.num_channels = num_channels
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.kl_weight = kl_weight

        self.encoder = build_encoder(num_channels)
        self.encoded_shape = encoded_shape(self.encoder, num_channels, image_size)
        flat = self.encoded_shape[0] * self.encoded_shape[1] * self.encoded_shape[2]
        self.to_mean = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)

        self.decoded_shape = (DECODER_START_CHANNELS, self.encoded_shape[1], self.encoded_shape[2])
        self.from_latent = nn.Linear(latent_dim, DECODER_START_CHANNELS * self.encoded_shape[1] * self.encoded_shape[2])
        self.decoder = build_decoder(num_channels, image_size)
        # Only the mixture has parameters: a Gaussian-prior VAE keeps the paper's state_dict (and old checkpoints load).
        self.prior = MixturePrior(latent_dim, components) if prior == "mixture" else None
        # First batch of the current epoch (first validation batch, or first train batch when there is no
        # validation), for the reconstruction grid.
        self._grid_batch: Tensor | None = None

    # ------------------------------------------------------------------ model

    def _to_float(self, images: Tensor) -> Tensor:
        """uint8 ``[B, C, H, W]`` -> float ``[B, C, H, W]`` in [0, 1], after checking it fits this VAE."""
        if images.dtype != torch.uint8:
            raise ValueError(f"the VAE takes uint8 images (0..255), got {images.dtype}; pass the raw pool images")
        expected = (self.num_channels, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"the VAE was built for images [B, {', '.join(map(str, expected))}], got {list(images.shape)}; "
                "train a VAE on this data set"
            )
        return images.float() / 255

    def _encode_float(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.encoder(x).flatten(1)
        return self.to_mean(hidden), self.to_logvar(hidden)

    def _decode_logits(self, z: Tensor) -> Tensor:
        """float ``[B, latent_dim]`` -> logits ``[B, C, H, W]``."""
        return self.decoder(self.from_latent(z).view(-1, *self.decoded_shape))

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters.

        Args:
            images: uint8 ``[B, C, H, W]``.

        Returns:
            ``(mean, logvar)``, each float ``[B, latent_dim]``.
        """
        return self._encode_float(self._to_float(images))

    def encode_mean(self, images: Tensor) -> Tensor:
        """The task-agnostic feature V(u): the posterior mean. Call in eval mode (BatchNorm running statistics).

        Args:
            images: uint8 ``[B, C, H, W]``.

        Returns:
            float ``[B, latent_dim]``.
        """
        return self.encode(images)[0]

    def _reconstruct(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Returns ``(x in [0, 1], logits, mean, logvar, z)``: ``z`` ``[B, latent_dim]`` is a posterior sample (the
        mean, in eval mode with the Gaussian prior, whose KL needs none); the decoder sees it in training mode and
        the mean otherwise."""
        x = self._to_float(images)
        mean, logvar = self._encode_float(x)
        sample = self.training or self.prior is not None
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if sample else mean
        return x, self._decode_logits(z if self.training else mean), mean, logvar, z

    def kl(self, mean: Tensor, logvar: Tensor, z: Tensor) -> Tensor:
        """The KL term ``[B]`` under this VAE's prior (``z``: a posterior sample, used by the mixture's estimate)."""
        return kl_to_standard_normal(mean, logvar) if self.prior is None else self.prior.kl(mean, logvar, z)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode and decode.

        In training mode z is sampled with the reparameterisation trick; in eval mode z is the mean, so the
        reconstruction is deterministic.

        Args:
            images: uint8 ``[B, C, H, W]``.

        Returns:
            ``(reconstruction, mean, logvar)``: float ``[B, C, H, W]`` in [0, 1], and ``[B, latent_dim]`` twice.
        """
        _, logits, mean, logvar, _ = self._reconstruct(images)
        return torch.sigmoid(logits), mean, logvar

    # ------------------------------------------------------------------ training

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images = batch[0]
        x, logits, mean, logvar, z = self._reconstruct(images)
        losses = vae_loss(logits, x, mean, logvar, self.kl_weight, kl=self.kl(mean, logvar, z))
        on_step = stage == "train"
        for name, value in losses.items():
            self.log(
                f"{stage}/{name}",
                value,
                on_step=on_step,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=images.shape[0],
                sync_dist=not on_step,
            )
        return losses["loss"]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """``batch = (uint8 [B, C, H, W], targets)``; targets are ignored."""
        if batch_idx == 0:
            self._keep_for_grid(batch[0], for_stage="train")
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """``batch = (uint8 [B, C, H, W], targets)``; targets are ignored. Reconstructs from the posterior mean."""
        if batch_idx == 0 and dataloader_idx == 0:
            self._keep_for_grid(batch[0], for_stage="val")
        return self._shared_step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        prior = list(self.prior.parameters()) if self.prior is not None else []
        networks = [p for name, p in self.named_parameters() if not name.startswith("prior.")]
        groups = [{"params": networks}] + ([{"params": prior, "weight_decay": 0.0}] if prior else [])
        return torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ reconstruction grid

    def _grid_wanted(self) -> bool:
        trainer = self.trainer
        return trainer.is_global_zero and not trainer.sanity_checking and isinstance(trainer.logger, TensorBoardLogger)

    def _keep_for_grid(self, images: Tensor, for_stage: str) -> None:
        # The grid comes from validation images when there are any: keep train images only without validation.
        if not self._grid_wanted() or (for_stage == "train" and self.trainer.enable_validation):
            return
        self._grid_batch = images[:GRID_IMAGES].detach()

    def _log_grid(self) -> None:
        if self._grid_batch is None or not self._grid_wanted():
            return
        images, self._grid_batch = self._grid_batch, None
        was_training = self.training
        self.eval()
        with torch.no_grad():
            reconstruction = self(images)[0]
        self.train(was_training)
        # Inputs on the first row, their reconstructions below them.
        grid = make_grid(torch.cat([images.float() / 255, reconstruction.float()]), nrow=len(images), pad_value=1.0)
        self.trainer.logger.experiment.add_image("vae/reconstructions", grid.cpu(), global_step=self.current_epoch)

    def on_validation_epoch_end(self) -> None:
        self._log_grid()

    def on_train_epoch_end(self) -> None:
        self._log_grid()


def load_vae_encoder(path: str, num_channels: int, image_size: int, device: torch.device | str = "cpu") -> VAE:
    """Load a trained VAE, frozen and in eval mode, after checking it fits the data.

    Args:
        path: a checkpoint written by ``python train.py fit --config configs/vae_<data>.yaml``.
        num_channels: the data's image channels.
        image_size: the data's image height and width.
        device: where to put the model.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a VAE checkpoint, or it was trained on images of another shape.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"no VAE checkpoint at {path}; train one with `python train.py fit --config configs/vae_<data>.yaml`"
        )
    train_hint = "`python train.py fit --config configs/vae_<data>.yaml`"
    not_vae = f"{path} is not a VAE checkpoint; pass one written by {train_hint}"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types; all mean "not ours"
        raise ValueError(f"{not_vae} ({type(error).__name__})") from error
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    required = ("num_channels", "image_size", "latent_dim")
    if not isinstance(hparams, dict) or any(key not in hparams for key in required) or not isinstance(state, dict):
        raise ValueError(not_vae)
    if not any(key.startswith("to_mean.") for key in state):
        raise ValueError(not_vae)
    trained = (int(hparams["num_channels"]), int(hparams["image_size"]))
    if trained != (num_channels, image_size):
        raise ValueError(
            f"the VAE at {path} was trained on {trained[0]}-channel {trained[1]}x{trained[1]} images but the data has "
            f"{num_channels}-channel {image_size}x{image_size} images; train a VAE on this data set"
        )
    try:
        model = VAE.load_from_checkpoint(path, map_location=device, weights_only=True)
    except RuntimeError as error:  # state_dict keys or shapes that do not match the hyper-parameters
        raise ValueError(f"{not_vae} ({str(error).splitlines()[0]})") from error
    model.eval()
    model.requires_grad_(False)
    return model
