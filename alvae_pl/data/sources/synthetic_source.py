"""Generated images of any count and size, one at a time: pools of millions for benchmarks and tests, no files."""

from __future__ import annotations

import numpy as np
import torch

from alvae_pl.data.image_data import ImageData, ImageSplit
from alvae_pl.data.image_store import SPLITS, RowReader, StorePlan
from alvae_pl.data.sources.base import ImageSource


class SyntheticSource(ImageSource):
    """``train_size + val_size + test_size`` images, each a class's bright square on noise.

    Image ``row`` of a split shows class ``row % num_classes`` as a square of side ``image_size // 4`` at a
    position fixed per class, on uniform noise of amplitude 0..95 drawn from ``(seed, split, row)``: each image is
    a pure function of its index, so a pool of any size is generated one image at a time (``plan_rows``) straight
    into an :class:`~alvae_pl.data.image_store.ImageStore`, never held whole in memory, and the classes are
    learnable.

    Args:
        train_size: images of the train split (the pool).
        val_size: images of the validation split.
        test_size: images of the test split.
        image_size: side of the square images in pixels (at least 8).
        channels: 1 (grayscale) or 3 (the square is coloured by class).
        num_classes: classes (at least 2).
        seed: seeds the noise.

    Example YAML::

        source:
          class_path: alvae_pl.data.sources.SyntheticSource
          init_args: {train_size: 1000000, image_size: 64}
    """

    def __init__(
        self,
        train_size: int = 10_000,
        val_size: int = 1_000,
        test_size: int = 1_000,
        image_size: int = 64,
        channels: int = 1,
        num_classes: int = 10,
        seed: int = 0,
    ) -> None:
        if min(train_size, val_size) < 1 or test_size < 0:
            raise ValueError(
                f"train_size={train_size}, val_size={val_size}, test_size={test_size}: train and validation need at "
                "least one image"
            )
        if image_size < 8:
            raise ValueError(f"image_size={image_size}; it must be at least 8 pixels")
        if channels not in (1, 3):
            raise ValueError(f"channels={channels}; choose 1 (grayscale) or 3 (RGB)")
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}; it must be at least 2")
        self.train_size = train_size
        self.val_size = val_size
        self.test_size = test_size
        self.image_size = image_size
        self.channels = channels
        self.num_classes = num_classes
        self.seed = seed

    def _sizes(self) -> dict[str, int]:
        return {"train": self.train_size, "val": self.val_size, "test": self.test_size}

    def image(self, split: str, row: int) -> np.ndarray:
        """Image ``row`` of ``split``: uint8 ``[channels, image_size, image_size]``."""
        size, label = self.image_size, row % self.num_classes
        rng = np.random.default_rng([self.seed, SPLITS.index(split), row])
        pixels = rng.integers(0, 96, size=(self.channels, size, size), dtype=np.uint8)
        side = size // 4
        cells = size // side  # a grid of square positions; the class picks one (wrapping when there are more)
        top, left = divmod(label % (cells * cells), cells)
        colour = 255 if self.channels == 1 else np.array([255, 160 + 95 * (label % 2), 160 + 95 * (label % 3 == 0)])
        pixels[:, top * side : (top + 1) * side, left * side : (left + 1) * side] = np.asarray(colour).reshape(-1, 1, 1)
        return pixels

    def plan_rows(self) -> tuple[StorePlan, RowReader]:
        targets = {split: torch.arange(count) % self.num_classes for split, count in self._sizes().items()}
        names = tuple(str(label) for label in range(self.num_classes))
        plan = StorePlan((self.channels, self.image_size, self.image_size), targets, "multiclass", names)
        return plan, self.image

    def load(self) -> ImageData:
        """Every image in memory (``train_size`` x ``channels`` x ``image_size``² bytes for the pool)."""
        plan, read = self.plan_rows()
        splits = {
            split: ImageSplit(
                images=torch.from_numpy(np.stack([read(split, row) for row in range(len(targets))]))
                if len(targets)
                else torch.empty((0, *plan.shape), dtype=torch.uint8),
                targets=targets,
            )
            for split, targets in plan.targets.items()
        }
        return ImageData(splits["train"], splits["val"], splits["test"], plan.task, plan.class_names)
