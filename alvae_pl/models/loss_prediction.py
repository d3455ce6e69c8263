"""Learning loss (Yoo & Kweon 2019): a head that predicts the task loss, and the pair ranking loss (eqs. 3-4).

With VAE features, the caller concatenates ``alpha * V(u)`` to the head's feature vector c (paper, "Methods").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class LossPredictionHead(nn.Module):
    """Predicts one loss value per image from the four residual-block outputs of a ResNet.

    Each block map is reduced by adaptive global average pooling (so any input size works, unlike the reference
    LossNet's fixed pooling sizes for 32 px images), mapped by a linear layer to ``hidden_dim`` and a ReLU; the
    results are concatenated to c ``[B, len(blocks) * hidden_dim]``, optionally followed by ``extra_dim`` extra
    features, and a final linear layer gives the prediction.

    Args:
        block_channels: channels of each block output (ResNet-18: 64, 128, 256, 512).
        hidden_dim: width each block is mapped to (128 in Yoo & Kweon).
        extra_dim: width of the extra feature vector appended to c (the VAE mean times alpha); 0 for none.
    """

    def __init__(self, block_channels: Sequence[int] = (64, 128, 256, 512), hidden_dim: int = 128, extra_dim: int = 0):
        super().__init__()
        if len(block_channels) == 0 or any(c < 1 for c in block_channels):
            raise ValueError(f"block_channels must be positive channel counts, got {list(block_channels)}")
        if hidden_dim < 1 or extra_dim < 0:
            raise ValueError(f"hidden_dim must be >= 1 and extra_dim >= 0, got {hidden_dim} and {extra_dim}")
        self.block_channels = tuple(int(c) for c in block_channels)
        self.hidden_dim = hidden_dim
        self.extra_dim = extra_dim
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.block_layers = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, hidden_dim), nn.ReLU(inplace=True)) for channels in self.block_channels
        )
        self.output = nn.Linear(len(self.block_channels) * hidden_dim + extra_dim, 1)

    def forward(self, blocks: Sequence[Tensor], extra: Tensor | None = None) -> Tensor:
        """Predicted loss per image.

        Args:
            blocks: one float ``[B, C_k, H_k, W_k]`` per block, ``C_k = block_channels[k]``.
            extra: float ``[B, extra_dim]``, required exactly when ``extra_dim > 0``.

        Returns:
            float ``[B]``.
        """
        if len(blocks) != len(self.block_channels):
            raise ValueError(f"expected {len(self.block_channels)} block outputs, got {len(blocks)}")
        channels = tuple(block.shape[1] for block in blocks)
        if channels != self.block_channels:
            raise ValueError(
                f"block outputs have {list(channels)} channels, the head was built for {list(self.block_channels)}"
            )
        features = [layer(self.pool(block).flatten(1)) for layer, block in zip(self.block_layers, blocks, strict=True)]
        if self.extra_dim > 0:
            if extra is None:
                raise ValueError(f"this head was built with extra_dim={self.extra_dim}: pass the extra (VAE) features")
            if extra.ndim != 2 or extra.shape != (blocks[0].shape[0], self.extra_dim):
                raise ValueError(
                    f"extra features must be [{blocks[0].shape[0]}, {self.extra_dim}], got {list(extra.shape)}"
                )
            features.append(extra)
        elif extra is not None:
            raise ValueError("this head was built with extra_dim=0: build it with extra_dim set to use extra features")
        return self.output(torch.cat(features, dim=1)).squeeze(1)


def pairwise_margin_loss(predicted: Tensor, target: Tensor, margin: float = 1.0) -> Tensor:
    """Ranking loss between predicted and true losses over pairs of images (eqs. 3-4).

    The batch is paired with its reverse: image ``i`` with ``B-1-i`` for ``i < B/2`` (an odd batch drops its
    last image first). For each pair, ``I = +1`` if ``target_i > target_j`` else ``-1``, and the pair costs
    ``max(0, -I * (predicted_i - predicted_j) + margin)``: zero once the prediction ranks the pair the right way
    by at least ``margin``. Only the ordering of the true losses matters, which stays meaningful while the task
    model's loss shrinks during training.

    Args:
        predicted: float ``[B]``, the head's predictions.
        target: float ``[B]``, the task model's per-image losses; detached here, so no gradient reaches the
            task model through this loss.
        margin: xi of eq. 3.

    Returns:
        Scalar mean over pairs; zero (still connected to ``predicted``'s graph) when ``B < 2``.
    """
    if predicted.ndim != 1 or predicted.shape != target.shape:
        raise ValueError(f"predicted and target must both be [B], got {list(predicted.shape)} and {list(target.shape)}")
    target = target.detach()
    size = predicted.shape[0] - predicted.shape[0] % 2
    if size < 2:
        return predicted.sum() * 0.0
    predicted, target = predicted[:size], target[:size]
    half = size // 2
    predicted_diff = (predicted - predicted.flip(0))[:half]
    target_diff = (target - target.flip(0))[:half]
    # Eq. 4: ties count as -1.
    indicator = torch.where(target_diff > 0, 1.0, -1.0).to(predicted_diff.dtype)
    return torch.clamp(margin - indicator * predicted_diff, min=0.0).mean()
