"""scikit-learn's bundled 8x8 digits, scaled up: the offline demo data set (no download, no files)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from alvae_pl.data.image_data import ImageData, ImageSplit
from alvae_pl.data.sources.base import ImageSource

_NUM_IMAGES = 1797  # sklearn's load_digits, fixed


class DigitsSource(ImageSource):
    """The 1,797 handwritten digits of ``sklearn.datasets.load_digits``, resized to ``image_size``.

    Pixel values 0..16 are scaled to 0..255 and the 8x8 images resized with bilinear interpolation. The
    train/val/test split is stratified by digit and fixed by ``split_seed``.

    Args:
        image_size: side of the resized images in pixels.
        val_fraction: share of all images in the validation split.
        test_fraction: share of all images in the test split.
        split_seed: seeds the split (and the long-tailed subsample); the same seed gives the same split.
        imbalance_ratio: how many times rarer the rarest digit (9) is than the most common (0) in the train split;
            1 (default) keeps the split balanced.

    Example YAML::

        source:
          class_path: alvae_pl.data.sources.DigitsSource
          init_args: {image_size: 28}          # or, long-tailed: {image_size: 28, imbalance_ratio: 10}
    """

    def __init__(
        self,
        image_size: int = 28,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        imbalance_ratio: float = 1.0,
    ):
        if image_size < 1:
            raise ValueError(f"image_size={image_size}; it must be a positive number of pixels, e.g. 28")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"val_fraction={val_fraction}, test_fraction={test_fraction}: each must be in (0, 1) and their "
                f"sum below 1, e.g. 0.15 and 0.15"
            )
        if not 1 <= imbalance_ratio < float("inf"):
            raise ValueError(
                f"imbalance_ratio={imbalance_ratio}; it must be a finite number >= 1 (1: balanced, 10: the rarest "
                "digit ten times rarer than the most common)"
            )
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.imbalance_ratio = imbalance_ratio

    def load(self) -> ImageData:
        """Loads, rescales, resizes and splits the digits.

        Returns:
            Images uint8 ``[N, 1, image_size, image_size]``, targets int64 ``[N]``, task ``"multiclass"``,
            classes "0".."9"; the three splits together hold all 1,797 images once (less what a long-tailed
            train split leaves out).
        """
        digits = load_digits()
        pixels = torch.from_numpy(digits.images).float().unsqueeze(1) * (255.0 / 16.0)  # [1797, 1, 8, 8]
        if self.image_size != pixels.shape[-1]:
            pixels = F.interpolate(
                pixels, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
            )
        images = pixels.round().clamp(0, 255).to(torch.uint8)
        targets = torch.from_numpy(digits.target).long()

        # Whole counts, so the sizes do not depend on how sklearn rounds fractions in two successive splits.
        num_test = round(self.test_fraction * _NUM_IMAGES)
        num_val = round(self.val_fraction * _NUM_IMAGES)
        indices = np.arange(len(targets))
        rest, test = train_test_split(indices, test_size=num_test, stratify=digits.target, random_state=self.split_seed)
        train, val = train_test_split(
            rest, test_size=num_val, stratify=digits.target[rest], random_state=self.split_seed
        )

        if self.imbalance_ratio > 1:
            train = long_tailed_subsample(train, digits.target, self.imbalance_ratio, self.split_seed)

        def split(chosen: np.ndarray) -> ImageSplit:
            index = torch.from_numpy(np.sort(chosen))
            return ImageSplit(images=images[index], targets=targets[index])

        return ImageData(
            train=split(train),
            val=split(val),
            test=split(test),
            task="multiclass",
            class_names=tuple(str(digit) for digit in range(10)),
        )


def long_tailed_counts(smallest: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Images kept per class for an exponential profile: ``floor(smallest * imbalance_ratio ** (-c / (K - 1)))``
    for class ``c`` of ``K``, at least 1; class 0 keeps ``smallest``, class ``K - 1`` about ``imbalance_ratio``
    times fewer."""
    return [max(1, math.floor(smallest * imbalance_ratio ** (-c / (num_classes - 1)))) for c in range(num_classes)]


def long_tailed_subsample(indices: np.ndarray, targets: np.ndarray, imbalance_ratio: float, seed: int) -> np.ndarray:
    """The subset of ``indices`` (into ``targets``) that :func:`long_tailed_counts` keeps of each class, each
    class's images drawn without replacement with ``seed``; sorted."""
    classes = targets[indices]
    num_classes = int(targets.max()) + 1
    counts = np.bincount(classes, minlength=num_classes)
    keep = long_tailed_counts(int(counts.min()), num_classes, imbalance_ratio)
    rng = np.random.default_rng(seed)
    kept = [rng.choice(indices[classes == c], size=keep[c], replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(kept))
