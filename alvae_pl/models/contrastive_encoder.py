"""The network of the contrastive (SimCLR) encoder: a backbone that gives the features, a head that is trained on.

A plain ``nn.Module``; :class:`~alvae_pl.models.contrastive.ContrastiveModel` trains it on the pool and
:class:`~alvae_pl.models.contrastive_features.ContrastiveFeatures` reads its backbone's embedding.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from alvae_pl.models.backbone import build_resnet18
from alvae_pl.models.vae_network import conv_block

Backbone = Literal["cnn", "resnet18"]

#: Channels of the small CNN's four 3x3 blocks; the first keeps the resolution, the others halve it.
CNN_CHANNELS = (32, 64, 128, 256)


def build_backbone(kind: Backbone, num_channels: int) -> tuple[nn.Module, int]:
    """The backbone and its embedding size: float ``[B, C, H, W]`` -> ``[B, D]``.

    ``cnn``: four 3x3 blocks (32-64-128-256 channels, the last three stride 2) and global average pooling, D = 256;
    seconds an epoch on the digits on a CPU. ``resnet18``: torchvision's ResNet-18 with the small stem (3x3
    stride-1 first convolution, no max-pool, as SimCLR's CIFAR variant), D = 512; the task model's architecture.
    """
    if kind == "cnn":
        channels = (num_channels, *CNN_CHANNELS)
        blocks = [
            conv_block(c_in, c_out, stride=1 if index == 0 else 2)
            for index, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True))
        ]
        return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten()), CNN_CHANNELS[-1]
    if kind == "resnet18":
        net = build_resnet18(num_classes=1, in_channels=num_channels, weights=None, stem="small")
        net.fc = nn.Identity()  # the 512-d pooled embedding is the output
        return net, 512
    raise ValueError(f"unknown backbone {kind!r}: use cnn or resnet18")


class ContrastiveEncoder(nn.Module):
    """Backbone f and projection head g of SimCLR: ``h = f(x)`` is the feature, ``z = g(h)`` what the loss sees.

    SimCLR (Chen et al., 2020, sec. 4.2) found ``h``, before the head, the better representation for downstream
    use: the head learns to discard what the augmentations change, which can be what a task needs.

    Args:
        num_channels: image channels.
        backbone: ``cnn`` or ``resnet18`` (:func:`build_backbone`).
        projection_dim: size of ``z``.
    """

    def __init__(self, num_channels: int, backbone: Backbone = "cnn", projection_dim: int = 128) -> None:
        super().__init__()
        self.backbone, self.embedding_dim = build_backbone(backbone, num_channels)
        # SimCLR's head: one hidden layer of the embedding's width with a ReLU.
        self.projection = nn.Sequential(
            nn.Linear(self.embedding_dim, self.embedding_dim),
            nn.ReLU(inplace=True),
            nn.Linear(self.embedding_dim, projection_dim),
        )

    @staticmethod
    def to_float(images: Tensor) -> Tensor:
        """uint8 ``[B, C, H, W]`` -> float ``[B, C, H, W]`` centred on 0 (``(x / 255 - 0.5) / 0.5``)."""
        return images.float().div(255).sub_(0.5).div_(0.5)

    def embed(self, images: Tensor) -> Tensor:
        """``h``: float ``[B, embedding_dim]`` of uint8 images ``[B, C, H, W]``."""
        return self.backbone(self.to_float(images))

    def forward(self, images: Tensor) -> Tensor:
        """``z = g(f(x))``: float ``[B, projection_dim]`` of uint8 images ``[B, C, H, W]``."""
        return self.projection(self.embed(images))
