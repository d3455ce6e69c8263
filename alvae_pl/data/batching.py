"""Whole-batch indexing of in-memory tensors: one tensor gather per batch, no per-sample collate."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from alvae_pl.seeding import SHUFFLE_STREAM, derive_seed


class TensorBatches(Dataset):
    """Selected rows of several aligned tensors, fetched a batch at a time.

    ``dataset[positions]`` with an index list returns ``tuple(t[rows[positions]] for t in tensors)``: one
    advanced-indexing gather instead of ``len(positions)`` ``__getitem__`` calls and a collate, which is what
    makes an in-memory pool as fast as a bare loop over the tensors. The tensors are never copied: a new
    labeled set is a new ``rows``, not a new copy of its images.

    Args:
        tensors: aligned tensors, ``[N, ...]`` each, all on one device.
        rows: int64 ``[n]``, the rows this dataset serves (default: all ``N``); moved to the tensors' device.
    """

    def __init__(self, *tensors: Tensor, rows: Tensor | None = None) -> None:
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("all tensors must have the same number of rows")
        self.tensors = tensors
        device = tensors[0].device
        self.rows = torch.arange(len(tensors[0]), device=device) if rows is None else rows.to(device)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: list[int] | Tensor) -> tuple[Tensor, ...]:
        rows = self.rows[torch.as_tensor(positions, dtype=torch.int64, device=self.rows.device)]
        return tuple(t[rows] for t in self.tensors)


class SeededBatchSampler(Sampler[Tensor]):
    """Yields int64 tensors of row indices, shuffled from ``(seed, epoch)`` and never from global RNG state.

    A run resumed at epoch ``e`` therefore sees exactly the batches an uninterrupted run saw at ``e``, on any
    device: the permutation is always drawn on the CPU, then moved to ``device`` once per epoch, so that data
    held on a GPU is gathered there with no host-to-device copy per batch.
    Under DDP, Lightning wraps this sampler and hands whole batches to each rank.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        epoch: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.num_rows = num_rows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.device = torch.device(device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, SHUFFLE_STREAM, self.epoch))
            order = torch.randperm(self.num_rows, generator=generator)
        else:
            order = torch.arange(self.num_rows)
        yield from order.to(self.device).split(self.batch_size)


def batch_loader(dataset: TensorBatches, sampler: SeededBatchSampler, num_workers: int = 0) -> DataLoader:
    """A DataLoader that passes each sampled index list straight to ``dataset[rows]``."""
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers)
