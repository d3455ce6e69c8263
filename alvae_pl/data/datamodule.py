"""The LightningDataModule that owns the label pool and serves its images."""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from alvae_pl.data.batching import SeededBatchSampler, TensorBatches, batch_loader
from alvae_pl.data.image_data import ImageData, ImageSplit, TaskKind
from alvae_pl.data.image_store import load_through_store
from alvae_pl.data.label_pool import LabelPool
from alvae_pl.data.sources.base import ImageSource


class ActiveDataModule(L.LightningDataModule):
    """Serves the labeled part of a pool for training, the val/test splits, and pool images for acquisition.

    Images stay uint8 ``[N, C, H, W]`` in memory and travel to the device as uint8; the model normalises
    them there (4x less host-to-device traffic than float32). On a GPU, the splits are copied to the device once
    when they fit under ``device_data_limit_gb``: every batch is then gathered on the device, with no
    host-to-device copy (and no host wait) per step. MNIST's three splits take 55 MB, ChestMNIST's at 28 px 88 MB.

    Args:
        source: where the images come from (MedMNIST, MNIST, scikit-learn digits, a user's ``.npz``).
        pool_size: how many train-split images form the pool (paper: 25,000 MNIST, 30,000 ChestMNIST);
            ``None`` takes the whole train split.
        initial_labels: pool images labeled at random before round one; ``None``: the paper's 3,000 (unused with
            ``train_on: pool``). A source
            whose train images are partly unlabeled (a lab's :class:`~alvae_pl.data.sources.FolderSource`)
            starts from the images its labels file names instead, and ``initial_labels`` must then be ``None``
            or their number.
        pool_seed: seeds the pool subset and the initial labels; keep it fixed across heuristics so that
            their comparison is paired.
        batch_size: training batch size (per DDP rank, in whole batches).
        eval_batch_size: batch size for evaluation and acquisition passes.
        num_workers: DataLoader workers; 0 is fastest for in-memory tensors.
        train_on: ``labeled`` trains on the labeled set (the task model); ``pool`` trains on every pool
            image, labels unused (the task-agnostic VAE).
        seed: seeds each epoch's shuffle together with the epoch number.
        data_on_device: keep a copy of the splits on the training device. ``None`` (default): on a CUDA device
            when they fit under ``device_data_limit_gb``; ``false``: never; ``true``: always.
        device_data_limit_gb: the most device memory the automatic choice gives the data (images and targets).
        image_store: a folder for the splits' images on disk (:class:`~alvae_pl.data.image_store.ImageStore`),
            used when their pixels exceed ``memory_cap_gb``: written once (resumable, with a progress bar), then
            memory-mapped by this and later runs, so a run's memory grows with its batches, not with the pool.
            ``None`` (default): always in memory.
        memory_cap_gb: the most host memory the images may take before ``image_store`` is used.
    """

    def __init__(
        self,
        source: ImageSource,
        pool_size: int | None = None,
        initial_labels: int | None = None,
        pool_seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        train_on: Literal["labeled", "pool"] = "labeled",
        seed: int = 0,
        data_on_device: bool | None = None,
        device_data_limit_gb: float = 4.0,
        image_store: str | None = None,
        memory_cap_gb: float = 16.0,
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
        self.data_on_device = data_on_device
        self.device_data_limit_gb = device_data_limit_gb
        if memory_cap_gb < 0:
            raise ValueError(f"memory_cap_gb must be >= 0 (0: always use the image store), got {memory_cap_gb}")
        self.image_store = image_store
        self.memory_cap_gb = memory_cap_gb
        self._served: ImageData | None = None
        # Labels an oracle gave during the run (pool positions [r], targets [r] or [r, K]): checkpointed, since a
        # lab's source reloads only the labels its file held at the start.
        self._revealed_positions = torch.empty(0, dtype=torch.int64)
        self._revealed_targets = torch.empty(0, dtype=torch.int64)
        # An expert's corrections of labels already given (pool positions [c], targets [c] or [c, K]), in the order
        # they were applied: checkpointed like the revealed labels, and applied after them.
        self._corrected_positions = torch.empty(0, dtype=torch.int64)
        self._corrected_targets = torch.empty(0, dtype=torch.int64)
        self._defer_initial = False

    @cached_property
    def data(self) -> ImageData:
        """The data set, loaded once on first use (through the image store when one is set)."""
        if self.image_store is None:
            return self.source.load()
        return load_through_store(self.source, self.image_store, self.memory_cap_gb)

    def defer_initial_labels(self) -> None:
        """Start the pool with no labeled image: a strategy chooses the initial labels before round one (a cold start,
        ``ActiveLearningLoop.start``). Called before the pool is first used."""
        if "pool" in self.__dict__:
            raise RuntimeError("defer_initial_labels must come before the pool is built")
        self._defer_initial = True

    @property
    def planned_initial_labels(self) -> int:
        """How many images a cold start labels: ``initial_labels`` (the paper's 3,000 when unset)."""
        return 3000 if self.initial_labels is None else self.initial_labels

    @cached_property
    def pool(self) -> LabelPool:
        known = self.data.train_known
        defer = self._defer_initial
        if bool(known.all()):
            # Training on the whole pool (the VAE) leaves the labeled set unused; one image keeps its invariants.
            default = 3000 if self.train_on == "labeled" else 1
            initial = default if self.initial_labels is None else self.initial_labels
            return LabelPool(len(self.data.train), self.pool_size, initial, self.pool_seed, defer_initial=defer)
        positions = known.nonzero().squeeze(1)
        if defer and len(positions) == 0:  # a lab with no labels at all: the run chooses the first images
            if self.initial_labels is None:
                raise ValueError(
                    "no pool image has a label yet and active.start chooses the first ones: set data.initial_labels "
                    "to how many images the expert labels first"
                )
            return LabelPool(len(self.data.train), self.pool_size, 0, self.pool_seed, positions, defer_initial=True)
        if self.initial_labels is not None and self.initial_labels != len(positions):
            raise ValueError(
                f"data.initial_labels={self.initial_labels}, but the labels file names {len(positions)} labeled "
                "pool images, which are the initial labels: set data.initial_labels: null"
            )
        return LabelPool(len(self.data.train), self.pool_size, 0, self.pool_seed, initial_positions=positions)

    @property
    def num_initial_labels(self) -> int:
        """How many pool images are labeled before round one (for a cold start not chosen yet: how many will be)."""
        if self.pool.deferred_initial and self.pool.num_labeled == 0:
            return self.planned_initial_labels
        return int((self.pool.labeled_rounds == 0).sum())

    @property
    def pool_files(self) -> tuple[str, ...] | None:
        """File name of each pool position, for sources read from files; ``None`` otherwise."""
        files = self.data.train_files
        return None if files is None else tuple(files[i] for i in self.pool.dataset_indices.tolist())

    def pool_targets(self, positions: Tensor) -> Tensor:
        """int64 ``[n]`` or ``[n, K]`` targets of pool positions ``[n]`` (``UNKNOWN_TARGET`` where nobody knows)."""
        return self.data.train.targets[self.pool.dataset_indices[positions]]

    def reveal(self, positions: Tensor, targets: Tensor) -> None:
        """Record labels an oracle gave for pool positions ``[n]``: targets int64 ``[n]`` or ``[n, K]``."""
        positions, targets = self._set_targets(positions, targets)
        self._revealed_positions = torch.cat([self._revealed_positions, positions])
        self._revealed_targets = torch.cat([self._revealed_targets.view(-1, *targets.shape[1:]), targets])

    def correct(self, positions: Tensor, targets: Tensor) -> None:
        """Replace the labels of labeled pool positions ``[c]`` (distinct) by an expert's corrections: targets int64
        ``[c]`` or ``[c, K]``. The next train loader serves them; the pool records the correction's round
        (:meth:`LabelPool.correct`)."""
        positions, targets = self._set_targets(positions, targets)
        self._corrected_positions = torch.cat([self._corrected_positions, positions])
        self._corrected_targets = torch.cat([self._corrected_targets.view(-1, *targets.shape[1:]), targets])

    def _set_targets(self, positions: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Writes targets ``[n]``/``[n, K]`` of distinct pool positions ``[n]`` into the data and the served copy."""
        positions = torch.as_tensor(positions, dtype=torch.int64).cpu()
        targets = torch.as_tensor(targets, dtype=torch.int64).cpu()
        rows = self.pool.dataset_indices[positions]
        self.data.train.targets[rows] = targets
        if self._served is not None and self._served.train is not self.data.train:
            served = self._served.train.targets
            served[rows.to(served.device)] = targets.to(served.device)
        return positions, targets

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

    def setup(self, stage: str) -> None:
        """Copy the splits to the training device when ``data_on_device`` asks for it (see the class docstring)."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        data = self.data
        size_gb = sum(split.images.nbytes + split.targets.nbytes for split in (data.train, data.val, data.test)) / 2**30
        wanted = self.data_on_device
        if wanted is None:
            wanted = device.type == "cuda" and size_gb <= self.device_data_limit_gb
        if not wanted or device.type == "cpu":
            self._served = None
            return

        def moved(split: ImageSplit) -> ImageSplit:
            return ImageSplit(split.images.to(device), split.targets.to(device))

        self._served = dataclasses.replace(data, train=moved(data.train), val=moved(data.val), test=moved(data.test))

    @property
    def served(self) -> ImageData:
        """The splits batches are gathered from: the device copy after ``setup`` put one there, else ``data``."""
        return self._served if self._served is not None else self.data

    def pool_images(self, positions: Tensor) -> Tensor:
        """uint8 ``[n, C, H, W]`` images of pool positions ``[n]``, on the device the data is served from."""
        rows = self.pool.dataset_indices[positions]
        images = self.served.train.images
        return images[rows.to(images.device)]

    def split_images(self, split: Literal["val", "test"], rows: Tensor) -> Tensor:
        """uint8 ``[n, C, H, W]`` images of rows ``[n]`` of the validation or test split."""
        images = getattr(self.served, split).images
        return images[rows.to(images.device)]

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        """The labeled set (or the whole pool when ``train_on='pool'``), shuffled from (seed, epoch).

        Built from the pool's current state at every call: the active-learning loop asks for a new one after
        each acquisition.
        """
        positions = self.pool.labeled if self.train_on == "labeled" else torch.arange(len(self.pool))
        rows = self.pool.dataset_indices[positions]
        split = self.served.train
        dataset = TensorBatches(split.images, split.targets, rows=rows)
        sampler = SeededBatchSampler(
            len(rows), self.batch_size, shuffle=True, seed=self.seed, epoch=self._epoch(), device=split.images.device
        )
        return batch_loader(dataset, sampler, self._workers(split))

    def _eval_loader(self, split: ImageSplit) -> DataLoader:
        sampler = SeededBatchSampler(len(split), self.eval_batch_size, shuffle=False, device=split.images.device)
        return batch_loader(TensorBatches(split.images, split.targets), sampler, self._workers(split))

    def _workers(self, split: ImageSplit) -> int:
        # Worker processes cannot hand out CUDA tensors; batches of device-resident data need none anyway.
        return 0 if split.images.device.type != "cpu" else self.num_workers

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.served.val)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.served.test)

    def state_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool.state_dict(),
            "revealed_positions": self._revealed_positions.clone(),
            "revealed_targets": self._revealed_targets.clone(),
            "corrected_positions": self._corrected_positions.clone(),
            "corrected_targets": self._corrected_targets.clone(),
            "initial_targets": self.pool_targets(self._initial_positions()),
        }

    def _initial_positions(self) -> Tensor:
        return self.pool.labeled[self.pool.labeled_rounds == 0]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pool.load_state_dict(state_dict["pool"])
        saved = state_dict.get("initial_targets")  # absent from checkpoints of earlier releases
        # Initial labels an oracle gave (a cold start's) or an expert corrected come back with the revealed and
        # corrected labels below: compare only those a labels file or the data set itself gives.
        none = torch.empty(0, dtype=torch.int64)
        restored = torch.cat([state_dict.get("revealed_positions", none), state_dict.get("corrected_positions", none)])
        given = ~torch.isin(self._initial_positions(), restored)
        if saved is not None and not torch.equal(saved[given], self.pool_targets(self._initial_positions()[given])):
            raise ValueError(
                "the labels of the initial images differ from the checkpoint's: a labels file edited after the run "
                "started? Restore it (correct a label in the run folder's corrections.csv), or start a new run in "
                "another folder"
            )
        self._revealed_positions = torch.empty(0, dtype=torch.int64)
        self._revealed_targets = torch.empty(0, dtype=torch.int64)
        if len(state_dict.get("revealed_positions", ())):
            self.reveal(state_dict["revealed_positions"], state_dict["revealed_targets"])
        self._corrected_positions = torch.empty(0, dtype=torch.int64)
        self._corrected_targets = torch.empty(0, dtype=torch.int64)
        positions = state_dict.get("corrected_positions", none)  # absent from checkpoints written before corrections
        for at in range(len(positions)):  # one at a time, in order: an image corrected twice ends with its last label
            self.correct(positions[at : at + 1], state_dict["corrected_targets"][at : at + 1])
