"""MNIST through torchvision, with a seeded validation split carved from the 60k training images."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import datasets

from alvae_pl.data.image_data import ImageData, ImageSplit
from alvae_pl.data.sources.base import ImageSource, one_line_reason

_RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class MNISTSource(ImageSource):
    """torchvision's MNIST: ``val_size`` images of the official training set for validation, the rest for
    training, and the official 10k test set.

    The tensors torchvision has already parsed (``.data`` uint8 ``[N, 28, 28]``, ``.targets``) are used as
    they are, without going through per-sample PIL decoding.

    Args:
        root: torchvision's root; the files live in ``{root}/MNIST/raw/*-ubyte``.
        download: let torchvision fetch the files when they are missing; needs internet.
        val_size: how many training images form the validation split.
        split_seed: seeds which training images go to validation; the same seed gives the same split.

    Example YAML::

        source:
          class_path: alvae_pl.data.sources.MNISTSource
          init_args: {root: data, download: true, val_size: 5000}
    """

    def __init__(self, root: str = "data", download: bool = False, val_size: int = 5000, split_seed: int = 0):
        if val_size < 1:
            raise ValueError(f"val_size={val_size}; the validation split needs at least one image")
        self.root = root
        self.download = download
        self.val_size = val_size
        self.split_seed = split_seed

    @property
    def raw_folder(self) -> Path:
        """Where torchvision looks for the four ``*-ubyte`` files."""
        return Path(self.root).expanduser() / "MNIST" / "raw"

    def load(self) -> ImageData:
        """Reads (or downloads) MNIST and splits off the validation images.

        Returns:
            Images uint8 ``[N, 1, 28, 28]``, targets int64 ``[N]``, task ``"multiclass"``, classes "0".."9".

        Raises:
            FileNotFoundError: the files are missing and ``download`` is false.
            OSError: the download failed.
            ValueError: a file is unreadable, or ``val_size`` leaves no training images.
        """
        train = self._read(train=True)
        test = self._read(train=False)
        num_train = len(train.images)
        if self.val_size >= num_train:
            raise ValueError(
                f"val_size={self.val_size} but MNIST's training set has {num_train} images: set a smaller val_size"
            )
        generator = torch.Generator().manual_seed(self.split_seed)
        order = torch.randperm(num_train, generator=generator)
        # Sorted so each split keeps the file's order, whatever the permutation.
        val_indices = order[: self.val_size].sort().values
        train_indices = order[self.val_size :].sort().values
        return ImageData(
            train=ImageSplit(train.images[train_indices], train.targets[train_indices]),
            val=ImageSplit(train.images[val_indices], train.targets[val_indices]),
            test=test,
            task="multiclass",
            class_names=tuple(str(digit) for digit in range(10)),
        )

    def _read(self, train: bool) -> ImageSplit:
        root = str(Path(self.root).expanduser())
        # Folders a failed download would leave behind empty; removed again if it fails.
        new_folders = [f for f in (Path(root), Path(root) / "MNIST", Path(self.raw_folder)) if not f.exists()]
        try:
            dataset = datasets.MNIST(root, train=train, download=self.download)
        except RuntimeError as error:
            for folder in reversed(new_folders):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            if not self.download and "not found" in str(error).lower():
                raise FileNotFoundError(
                    f"MNIST not found: torchvision looks for {self.raw_folder}/{{{','.join(_RAW_FILES)}}}; pass "
                    f"--data.source.init_args.download true (needs internet) or put the files there"
                ) from None
            raise OSError(
                f"downloading MNIST to {self.raw_folder} failed ({one_line_reason(error)}); check the internet "
                f"connection, or put {', '.join(_RAW_FILES)} there"
            ) from None
        except (AssertionError, TypeError, ValueError, IndexError) as error:
            # torchvision's idx reader asserts on a malformed header and raises TypeError/ValueError on a wrong type.
            raise ValueError(
                f"MNIST files in {self.raw_folder} are unreadable ({one_line_reason(error)}): delete them and "
                f"download again"
            ) from None
        images = dataset.data.unsqueeze(1).contiguous()
        return ImageSplit(images=images, targets=dataset.targets.long())
