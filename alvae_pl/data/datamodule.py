"""The LightningDataModule that owns the label pool and serves its images."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from alvae_pl.data.batching import SeededBatchSampler, TensorBatches, batch_loader
from alvae_pl.data.image_data import ImageData, TaskKind
from alvae_pl.data.label_pool import LabelPool
from alvae_pl.data.sources.base import ImageSource


class ActiveDataModule(L.LightningDataModule):
    """Serves the labeled part of a pool for training, the val/test splits, and pool images for acquisition.

    Images stay uint8 ``[N, C, H, W]`` in memory and travel to the device as uint8; the model normalises
    them there (4x less host-to-device traffic than float32).

    Args:
        source: where the images come from (MedMNIST, MNIST, scikit-learn digits, a user's ``.npz``).
        pool_size: how many train-split images form the pool (paper: 25,000 MNIST, 30,000 ChestMNIST);
            ``None`` takes the whole train split.
        initial_labels: labeled pool images before round one (paper: 3,000).
        pool_seed: seeds the pool subset and the initial labels; keep it fixed across heuristics so that
            their comparison is paired.
        batch_size: training batch size (per DDP rank, in whole batches).
        eval_batch_size: batch size for evaluation and acquisition passes.
        num_workers: DataLoader workers; 0 is fastest for in-memory tensors.
        train_on: ``labeled`` trains on the labeled set (the task model); ``pool`` trains on every pool
            image, labels unused (the task-agnostic VAE).
        seed: seeds each epoch's shuffle together with the epoch number.
    """

    def __init__(
        self,
        source: ImageSource,
        pool_size: int | None = None,
        initial_labels: int = 3000,
        pool_seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        train_on: Literal["labeled", "pool"] = "labeled",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.source = source
        self.pool_size = pool_size
        self.initial_labels = initial_labels
        self.pool_seed = pool_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.train_on = train_on
        self.seed = seed

    @cached_property
    def data(self) -> ImageData:
        """The data set, loaded once on first use."""
        return self.source.load()

    @cached_property
    def pool(self) -> LabelPool:
        return LabelPool(len(self.data.train), self.pool_size, self.initial_labels, self.pool_seed)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def num_channels(self) -> int:
        return self.data.num_channels

    @property
    def image_size(self) -> int:
        return self.data.image_size

    @property
    def task(self) -> TaskKind:
        return self.data.task

    def pool_images(self, positions: Tensor) -> Tensor:
        """uint8 ``[n, C, H, W]`` images of pool positions ``[n]``."""
        return self.data.train.images[self.pool.dataset_indices[positions]]

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        """The labeled set (or the whole pool when ``train_on='pool'``), shuffled from (seed, epoch).

        Built from the pool's current state at every call: the active-learning loop asks for a new one after
        each acquisition.
        """
        positions = self.pool.labeled if self.train_on == "labeled" else torch.arange(len(self.pool))
        rows = self.pool.dataset_indices[positions]
        split = self.data.train
        dataset = TensorBatches(split.images, split.targets, rows=rows)
        sampler = SeededBatchSampler(len(rows), self.batch_size, shuffle=True, seed=self.seed, epoch=self._epoch())
        return batch_loader(dataset, sampler, self.num_workers)

    def _eval_loader(self, images: Tensor, targets: Tensor) -> DataLoader:
        sampler = SeededBatchSampler(len(images), self.eval_batch_size, shuffle=False)
        return batch_loader(TensorBatches(images, targets), sampler, self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.data.val.images, self.data.val.targets)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.data.test.images, self.data.test.targets)

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pool.load_state_dict(state_dict["pool"])
