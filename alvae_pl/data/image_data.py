"""The in-memory form every data source produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

TaskKind = Literal["multiclass", "multilabel"]

#: The target of a train image whose label nobody knows yet (a lab's unlabeled scans): ``-1`` as a class index,
#: a row of ``-1`` as findings. Only the train split may hold it; an oracle replaces it when the image is labeled.
UNKNOWN_TARGET = -1


@dataclass(frozen=True)
class ImageSplit:
    """One split of a data set, held in memory.

    Attributes:
        images: uint8 ``[N, C, H, W]``.
        targets: int64 ``[N]`` class indices (multi-class) or int64 ``[N, K]`` 0/1 findings (multi-label).
    """

    images: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {list(self.images.shape)}")
        if self.targets.dtype != torch.int64 or self.targets.ndim not in (1, 2):
            raise ValueError(
                f"targets must be int64 [N] or [N, K], got {self.targets.dtype} {list(self.targets.shape)}"
            )
        if len(self.images) != len(self.targets):
            raise ValueError(f"{len(self.images)} images but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class ImageData:
    """Train, validation and test splits of one data set, with what a model needs to know about it.

    Attributes:
        train, val, test: the splits. Train targets may be ``UNKNOWN_TARGET`` (images nobody has labeled yet);
            validation and test targets are always known.
        task: multi-class or multi-label.
        class_names: one name per class (multi-class) or per finding (multi-label).
        train_files: for images read from files, each train image's file name (relative to its folder), so that
            an expert can be shown which images to label; ``None`` for built-in data sets.
        val_files, test_files: the same for the validation and test images (for predictions on them).
    """

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    task: TaskKind
    class_names: tuple[str, ...]
    train_files: tuple[str, ...] | None = None
    val_files: tuple[str, ...] | None = None
    test_files: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        shapes = {tuple(split.images.shape[1:]) for split in (self.train, self.val, self.test)}
        if len(shapes) != 1:
            raise ValueError(f"train, val and test images differ in shape: {sorted(shapes)}")
        for split in (self.train, self.val, self.test):
            if self.task == "multilabel" and (split.targets.ndim != 2 or split.targets.shape[1] != self.num_classes):
                raise ValueError(
                    f"multi-label targets must be [N, {self.num_classes}], got {list(split.targets.shape)}"
                )
            if self.task == "multiclass" and split.targets.ndim != 1:
                raise ValueError(f"multi-class targets must be [N], got {list(split.targets.shape)}")
        for name, split in (("val", self.val), ("test", self.test)):
            if len(split) and bool((split.targets == UNKNOWN_TARGET).any()):
                raise ValueError(f"the {name} split holds images without a label; only train images may lack one")
        for name, files, split in (
            ("train", self.train_files, self.train),
            ("val", self.val_files, self.val),
            ("test", self.test_files, self.test),
        ):
            if files is not None and len(files) != len(split):
                raise ValueError(f"{len(files)} {name} file names for {len(split)} {name} images")

    @property
    def train_known(self) -> torch.Tensor:
        """bool ``[N]``: which train images have a known label."""
        targets = self.train.targets
        known = targets != UNKNOWN_TARGET
        return known if targets.ndim == 1 else known.all(dim=1)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])
