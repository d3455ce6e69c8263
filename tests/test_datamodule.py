"""The DataModule: what the training loader serves, in which order, and what it never serves."""

from __future__ import annotations

from pathlib import Path

import torch

from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.data.sources import MedMNISTSource


def _datamodule(root: Path, **kwargs: object) -> ActiveDataModule:
    options = {"pool_size": 50, "initial_labels": 10, "pool_seed": 1, "batch_size": 4}
    options.update(kwargs)
    return ActiveDataModule(MedMNISTSource("chestmnist", root=str(root)), **options)


def _epoch_rows(datamodule: ActiveDataModule) -> list[torch.Tensor]:
    return [images.flatten(1).sum(1) for images, _ in datamodule.train_dataloader()]


def test_train_loader_serves_exactly_the_labeled_images_with_their_targets(chest_npz: Path) -> None:
    datamodule = _datamodule(chest_npz.parent)
    batches = list(datamodule.train_dataloader())
    images = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches])
    assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28)
    assert targets.shape == (10, 14) and [len(b[0]) for b in batches] == [4, 4, 2]
    rows = datamodule.pool.dataset_indices[datamodule.pool.labeled]
    expected = {
        (img.numpy().tobytes(), tuple(t.tolist()))
        for img, t in zip(datamodule.data.train.images[rows], datamodule.data.train.targets[rows], strict=True)
    }
    served = {(img.numpy().tobytes(), tuple(t.tolist())) for img, t in zip(images, targets, strict=True)}
    assert served == expected


def test_next_loader_sees_new_labels(chest_npz: Path) -> None:
    datamodule = _datamodule(chest_npz.parent)
    datamodule.pool.label(datamodule.pool.unlabeled[:7], round_index=1)
    assert sum(len(b[0]) for b in datamodule.train_dataloader()) == 17


def test_each_epoch_shuffle_is_a_function_of_seed_and_epoch(chest_npz: Path) -> None:
    first = _datamodule(chest_npz.parent, seed=3)
    second = _datamodule(chest_npz.parent, seed=3)
    other_seed = _datamodule(chest_npz.parent, seed=4)
    order = [torch.cat(_epoch_rows(first))]
    assert torch.equal(order[0], torch.cat(_epoch_rows(second)))
    assert not torch.equal(order[0], torch.cat(_epoch_rows(other_seed)))
    # A later epoch reshuffles: the loader reads the epoch from the trainer it is attached to.
    first.trainer = type("T", (), {"current_epoch": 5})()
    assert not torch.equal(order[0], torch.cat(_epoch_rows(first)))


def test_pool_mode_serves_every_pool_image_and_nothing_from_val_or_test(chest_npz: Path) -> None:
    datamodule = _datamodule(chest_npz.parent, train_on="pool")
    images = torch.cat([b[0] for b in datamodule.train_dataloader()])
    assert len(images) == 50
    train_bytes = {img.numpy().tobytes() for img in datamodule.data.train.images}
    assert all(img.numpy().tobytes() in train_bytes for img in images)
    assert len(datamodule.pool.dataset_indices) == 50 and datamodule.pool.dataset_indices.max() < 60


def test_evaluation_loaders_keep_order(chest_npz: Path) -> None:
    datamodule = _datamodule(chest_npz.parent, eval_batch_size=8)
    images = torch.cat([b[0] for b in datamodule.test_dataloader()])
    assert torch.equal(images, datamodule.data.test.images)
    assert datamodule.num_classes == 14 and datamodule.task == "multilabel" and datamodule.num_channels == 1


def test_state_dict_restores_the_pool(chest_npz: Path) -> None:
    datamodule = _datamodule(chest_npz.parent)
    datamodule.pool.label(datamodule.pool.unlabeled[[3, 8]], round_index=1)
    fresh = _datamodule(chest_npz.parent)
    fresh.load_state_dict(datamodule.state_dict())
    assert torch.equal(fresh.pool.labeled, datamodule.pool.labeled)
