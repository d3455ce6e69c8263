"""The paper's VAE as a plain network: convolutional encoder to a Gaussian posterior, decoder back to pixel logits.

Its training (:class:`alvae_pl.models.vae.VAE`, a LightningModule) and its use as the frozen task-agnostic features
V(u) of eq. 6 (:class:`alvae_pl.models.vae_features.VAEFeatures`) both hold this module; the label-aware VAE
(:mod:`alvae_pl.models.label_aware_vae`) reuses its layer builders.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from alvae_pl.models.latent_prior import MixturePrior, PriorKind, kl_to_standard_normal

#: Channels of the four stride-2 encoder convolutions; the last one is the smallest feature map's depth.
ENCODER_CHANNELS = (32, 64, 128, 256)
#: Channels of the decoder's first map, at the encoder's smallest resolution. Narrower than the encoder's 256:
#: upsampling 256 channels to full size was two thirds of a training step's time on the CPU.
DECODER_START_CHANNELS = 64
#: Channels of the full-resolution decoder convolutions (the last one maps to the image's channels).
DECODER_CHANNELS = 32


def conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """A 3x3 convolution (``stride`` 1 or 2), batch norm and ReLU: ``[B, in, H, W] -> [B, out, H/stride, W/stride]``."""
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
        *(conv_block(c_in, c_out, stride=2) for c_in, c_out in zip(channels[:-1], channels[1:], strict=True))
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
        conv_block(DECODER_START_CHANNELS, DECODER_CHANNELS, stride=1),
        conv_block(DECODER_CHANNELS, DECODER_CHANNELS, stride=1),
        conv_block(DECODER_CHANNELS, DECODER_CHANNELS, stride=1),
        conv_block(DECODER_CHANNELS, DECODER_CHANNELS, stride=1),
        nn.Conv2d(DECODER_CHANNELS, num_channels, kernel_size=3, padding=1),
    )


class VAENetwork(nn.Module):
    """Convolutional VAE for uint8 images of 1 or 3 channels and 16 to 512 pixels a side.

    Encoder: four 3x3 stride-2 convolutions (32-64-128-256 channels, BatchNorm, ReLU; 28 px -> 2x2, 64 -> 4x4,
    224 -> 14x14), flattened, then two linear layers to the posterior mean and log-variance.
    Decoder: a linear layer back to the smallest feature map's size (64 channels), a bilinear upsampling straight
    to the input size followed by a convolution, then four size-preserving 3x3 convolutions; a sigmoid gives
    pixels in [0, 1].

    Args:
        num_channels: image channels (1 grayscale, 3 RGB).
        image_size: image height and width in pixels.
        latent_dim: size of the latent code, i.e. of V(u).
        prior: ``gaussian``, the paper's N(0, I), or ``mixture``, a learnable mixture of ``components`` Gaussians
            (:class:`~alvae_pl.models.latent_prior.MixturePrior`).
        components: the mixture's number of Gaussians (with ``prior: mixture``).
    """

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int = 28,
        latent_dim: int = 32,
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
        self.num_channels = num_channels
        self.image_size = image_size
        self.latent_dim = latent_dim

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

    def to_float(self, images: Tensor) -> Tensor:
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

    def encode_float(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """float ``[B, C, H, W]`` in [0, 1] -> ``(mean, logvar)``, each ``[B, latent_dim]``."""
        hidden = self.encoder(x).flatten(1)
        return self.to_mean(hidden), self.to_logvar(hidden)

    def decode_logits(self, z: Tensor) -> Tensor:
        """float ``[B, latent_dim]`` -> logits ``[B, C, H, W]``."""
        return self.decoder(self.from_latent(z).view(-1, *self.decoded_shape))

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters.

        Args:
            images: uint8 ``[B, C, H, W]``.

        Returns:
            ``(mean, logvar)``, each float ``[B, latent_dim]``.
        """
        return self.encode_float(self.to_float(images))

    def encode_mean(self, images: Tensor) -> Tensor:
        """The task-agnostic feature V(u): the posterior mean. Call in eval mode (BatchNorm running statistics).

        Args:
            images: uint8 ``[B, C, H, W]``.

        Returns:
            float ``[B, latent_dim]``.
        """
        return self.encode(images)[0]

    def reconstruct(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Returns ``(x in [0, 1], logits, mean, logvar, z)``: ``z`` ``[B, latent_dim]`` is a posterior sample (the
        mean, in eval mode with the Gaussian prior, whose KL needs none); the decoder sees it in training mode and
        the mean otherwise."""
        x = self.to_float(images)
        mean, logvar = self.encode_float(x)
        sample = self.training or self.prior is not None
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if sample else mean
        return x, self.decode_logits(z if self.training else mean), mean, logvar, z

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
        _, logits, mean, logvar, _ = self.reconstruct(images)
        return torch.sigmoid(logits), mean, logvar
