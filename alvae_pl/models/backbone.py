"""The ResNet-18 backbone: torchvision's network, adapted to small images, any channel count and any base width."""

from __future__ import annotations

import os
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models import ResNet, ResNet18_Weights, resnet18
from torchvision.models.resnet import BasicBlock, conv1x1

Weights = Literal["IMAGENET1K_V1"]
Stem = Literal["imagenet", "small"]

#: ResNet-18's base width: channels of the stem and the first residual stage (then 128, 256, 512).
RESNET18_WIDTH = 64

# torchvision's ImageNet normalisation, applied on the device to pretrained backbones.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneOutputs(NamedTuple):
    """Everything the heuristics read off one forward pass.

    Attributes:
        logits: ``[B, K]``.
        embedding: ``[B, 8w]`` penultimate features T_f(u), after global average pooling (``w``: the base width,
            64 for ResNet-18, so ``[B, 512]``).
        blocks: the four residual-block outputs, ``[B, w, H/4, W/4]`` ... ``[B, 8w, H/32, W/32]`` with the
            ImageNet stem (``H``, ``W``, ``H/2`` ... with the small stem).
    """

    logits: Tensor
    embedding: Tensor
    blocks: tuple[Tensor, Tensor, Tensor, Tensor]


def imagenet_weights_path() -> str:
    """Where torchvision looks for (and caches) the ImageNet ResNet-18 weights."""
    filename = os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def block_channels(width: int) -> tuple[int, int, int, int]:
    """Channels of the four residual stages of a ResNet-18 of base width ``width`` (64: 64, 128, 256, 512)."""
    return (width, 2 * width, 4 * width, 8 * width)


def build_resnet18(
    num_classes: int, in_channels: int, weights: Weights | None, stem: Stem, width: int = RESNET18_WIDTH
) -> ResNet:
    """torchvision's ResNet-18 with a new ``num_classes`` head.

    Args:
        num_classes: outputs of the final layer.
        in_channels: input channels the first convolution takes; with ImageNet weights it stays 3 and the
            caller repeats grayscale images.
        weights: ``None`` for random initialisation (from the global RNG: seed it first), or
            ``"IMAGENET1K_V1"``.
        stem: ``imagenet`` keeps the 7x7 stride-2 convolution and max-pool; ``small`` swaps them for a 3x3
            stride-1 convolution without max-pool, which keeps 4x more resolution on 28-32 px images at
            16x the compute.
        width: base width ``w``: the stages have ``w``, ``2w``, ``4w``, ``8w`` channels and the embedding ``8w``.
            64 is ResNet-18; a narrower one has the same structure (stem, four stages of two basic blocks, the
            same initialisation) at about ``(w / 64)^2`` of the compute, for tests. Random initialisation only.
    """
    if width != RESNET18_WIDTH:
        if width < 1:
            raise ValueError(f"width={width}: the base width is a positive number of channels, e.g. 64 (ResNet-18)")
        if weights is not None:
            raise ValueError(f"{weights} weights exist for width {RESNET18_WIDTH} only: pass --model.weights null")
        net = _narrow_resnet18(num_classes, in_channels, width)
    elif weights is None:
        net = resnet18(weights=None, num_classes=num_classes)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    elif weights == "IMAGENET1K_V1":
        try:
            net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
        except OSError as error:  # URLError is an OSError: offline and not cached
            raise FileNotFoundError(
                f"ImageNet ResNet-18 weights are not at {imagenet_weights_path()} and could not be downloaded "
                f"({error.__class__.__name__}): put {ResNet18_Weights.IMAGENET1K_V1.url} there "
                "(TORCH_HOME moves the folder) or pass --model.weights null"
            ) from None
        # Pretrained weights only exist for 1000 classes: load them, then replace the head.
        net.fc = nn.Linear(512, num_classes)
    else:
        raise ValueError(f"unknown weights {weights!r}: use null or IMAGENET1K_V1")
    if stem == "small":
        net.conv1 = nn.Conv2d(net.conv1.in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif stem != "imagenet":
        raise ValueError(f"unknown stem {stem!r}: use imagenet or small")
    return net


def _narrow_resnet18(num_classes: int, in_channels: int, width: int) -> ResNet:
    """A ResNet-18 of base width ``width``, randomly initialised as torchvision initialises its own.

    torchvision's ``ResNet`` fixes the width at 64 (``width_per_group`` only widens bottleneck blocks), so the
    layers of a built one are replaced: the same module names, so the forward pass and checkpoints' keys match.
    """
    net = resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    inplanes = width
    for name, planes, stride in zip(
        ("layer1", "layer2", "layer3", "layer4"), block_channels(width), (1, 2, 2, 2), strict=True
    ):
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
        setattr(net, name, nn.Sequential(BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes)))
        inplanes = planes
    net.fc = nn.Linear(inplanes, num_classes)
    # torchvision's initialisation of the convolutions and batch norms (the linear layer keeps PyTorch's default).
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
    return net


def resnet_forward(net: ResNet, x: Tensor, dropout: float = 0.0) -> BackboneOutputs:
    """One pass through ``net`` that keeps the intermediate outputs. ``x``: float ``[B, C, H, W]``.

    ``dropout`` > 0 drops units of the embedding before the classifier (``net.fc``); the embedding returned is the
    one before dropout. Callers pass 0 outside training.
    """
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    b1 = net.layer1(x)
    b2 = net.layer2(b1)
    b3 = net.layer3(b2)
    b4 = net.layer4(b3)
    embedding = torch.flatten(net.avgpool(b4), 1)
    classifier_input = torch.nn.functional.dropout(embedding, dropout) if dropout > 0 else embedding
    return BackboneOutputs(net.fc(classifier_input), embedding, (b1, b2, b3, b4))
