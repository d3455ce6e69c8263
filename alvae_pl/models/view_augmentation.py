"""Random views of uint8 image batches for contrastive learning, drawn on the images' device from one generator.

Hand-written tensor operations rather than torchvision's transforms: those draw one set of parameters per call from
the global RNG, whereas a contrastive batch needs different parameters for every image (one call per image would
cost a Python loop per step), and a view must come from an explicit generator so that the same seed gives the same
views (a resumed or repeated run trains on the same pairs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class ViewAugmentation:
    """SimCLR's view distribution adapted to small grayscale or medical images.

    Each image gets, independently: a random resized crop (an area share in ``crop_scale`` of the image, aspect
    ratio in ``aspect_ratio``, resized back to the full size), then with probability ``jitter_p`` a brightness and a
    contrast change, with probability ``blur_p`` a Gaussian blur, with probability ``noise_p`` additive Gaussian
    noise. SimCLR's colour (hue, saturation) jitter is left out: most of these images are grayscale.

    Flips and rotations are off by default: they change what a digit means (6 and 9, a mirrored 2), and in a chest
    radiograph which side the heart is on. Turn them on for data where orientation carries no class.

    Args:
        crop_scale: ``(min, max)`` share of the image's area a crop keeps (SimCLR on ImageNet: 0.08 to 1; digits of
            28 px lose their identity below about a third).
        aspect_ratio: ``(min, max)`` width / height of a crop, drawn log-uniformly (SimCLR: 3/4 to 4/3).
        brightness: brightness factor drawn from ``[1 - brightness, 1 + brightness]``.
        contrast: contrast factor drawn from ``[1 - contrast, 1 + contrast]`` (around each image's mean).
        jitter_p: probability of the brightness and contrast change.
        blur_sigma: ``(min, max)`` standard deviation of the blur, in pixels.
        blur_p: probability of the blur.
        noise_std: largest standard deviation of the additive noise, on the [0, 1] intensity scale.
        noise_p: probability of the noise.
        horizontal_flip: flip left-right with probability 1/2.
        rotation: largest rotation angle in degrees (0: none).
    """

    def __init__(
        self,
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
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {tuple(crop_scale)}")
        if not 0 < aspect_ratio[0] <= aspect_ratio[1]:
            raise ValueError(f"aspect_ratio must satisfy 0 < min <= max, got {tuple(aspect_ratio)}")
        if not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < min <= max, got {tuple(blur_sigma)}")
        if not (0 <= brightness < 1 and 0 <= contrast < 1 and noise_std >= 0 and rotation >= 0):
            raise ValueError("brightness and contrast must be in [0, 1), noise_std and rotation >= 0")
        for name, p in (("jitter_p", jitter_p), ("blur_p", blur_p), ("noise_p", noise_p)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {p}")
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.aspect_ratio = (float(aspect_ratio[0]), float(aspect_ratio[1]))
        self.brightness = brightness
        self.contrast = contrast
        self.jitter_p = jitter_p
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.blur_p = blur_p
        self.noise_std = noise_std
        self.noise_p = noise_p
        self.horizontal_flip = horizontal_flip
        self.rotation = rotation

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """One random view of each image.

        Args:
            images: uint8 ``[B, C, H, W]``.
            generator: on the images' device; every random choice is drawn from it.

        Returns:
            uint8 ``[B, C, H, W]`` on the images' device.
        """
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"views are drawn from uint8 [B, C, H, W] images, got {images.dtype} {list(images.shape)}")
        x = images.float().div_(255)
        x = self._crop(x, generator)
        x = self._jitter(x, generator)
        x = self._blur(x, generator)
        x = self._noise(x, generator)
        return x.clamp_(0, 1).mul_(255).round_().to(torch.uint8)

    def _uniform(self, low: float, high: float, count: int, generator: torch.Generator, device: torch.device) -> Tensor:
        return torch.rand(count, generator=generator, device=device).mul_(high - low).add_(low)

    def _chosen(self, p: float, count: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """float ``[count, 1, 1, 1]``: 1 where the operation applies. Drawn even at p 0 or 1, so that the other
        operations' draws do not depend on these settings."""
        return (torch.rand(count, generator=generator, device=device) < p).float().view(-1, 1, 1, 1)

    def _crop(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Crop, flip and rotation as one affine resampling of the whole batch: ``[B, C, H, W]`` in, same out."""
        batch, device = len(x), x.device
        area = self._uniform(*self.crop_scale, batch, generator, device)
        log_ratio = self._uniform(*(math.log(r) for r in self.aspect_ratio), batch, generator, device)
        # Width and height of the crop as shares of the image's (at most 1: the crop stays inside).
        width = torch.sqrt(area * log_ratio.exp()).clamp_(max=1)
        height = torch.sqrt(area / log_ratio.exp()).clamp_(max=1)
        # Centre in grid units [-1, 1], so that the crop lies inside the image.
        centre_x = (self._uniform(-1, 1, batch, generator, device)) * (1 - width)
        centre_y = (self._uniform(-1, 1, batch, generator, device)) * (1 - height)
        flip = torch.where(torch.rand(batch, generator=generator, device=device) < 0.5, -1.0, 1.0)
        flip = flip if self.horizontal_flip else torch.ones_like(flip)
        angle = self._uniform(-self.rotation, self.rotation, batch, generator, device) * (math.pi / 180)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack(
            [
                torch.stack([width * cos * flip, -height * sin, centre_x], dim=1),
                torch.stack([width * sin * flip, height * cos, centre_y], dim=1),
            ],
            dim=1,
        )  # [B, 2, 3]: output grid -> input coordinates
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x: Tensor, generator: torch.Generator) -> Tensor:
        batch, device = len(x), x.device
        chosen = self._chosen(self.jitter_p, batch, generator, device)
        bright = self._uniform(1 - self.brightness, 1 + self.brightness, batch, generator, device).view(-1, 1, 1, 1)
        contrast = self._uniform(1 - self.contrast, 1 + self.contrast, batch, generator, device).view(-1, 1, 1, 1)
        changed = x * bright
        mean = changed.mean(dim=(1, 2, 3), keepdim=True)
        changed = ((changed - mean) * contrast + mean).clamp_(0, 1)
        return torch.lerp(x, changed, chosen)

    def _blur(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Separable Gaussian blur with a sigma per image, as two grouped convolutions of the batch."""
        batch, channels, height, width = x.shape
        chosen = self._chosen(self.blur_p, batch, generator, x.device)
        sigma = self._uniform(*self.blur_sigma, batch, generator, x.device)
        radius = max(1, math.ceil(2 * self.blur_sigma[1]))
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # [B*C, k]
        # One group per (image, channel): each gets its own kernel in one convolution call.
        flat = F.pad(x.reshape(1, batch * channels, height, width), (radius, radius, radius, radius), mode="replicate")
        flat = F.conv2d(flat, kernel.view(-1, 1, 1, 2 * radius + 1), groups=batch * channels)
        flat = F.conv2d(flat, kernel.view(-1, 1, 2 * radius + 1, 1), groups=batch * channels)
        return torch.lerp(x, flat.view_as(x), chosen)

    def _noise(self, x: Tensor, generator: torch.Generator) -> Tensor:
        batch = len(x)
        chosen = self._chosen(self.noise_p, batch, generator, x.device)
        std = self._uniform(0, self.noise_std, batch, generator, x.device).view(-1, 1, 1, 1)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + noise * std * chosen
