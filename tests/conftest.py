"""Shared fixtures: tiny data sets in MedMNIST's ``.npz`` layout, written by the tests themselves."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

# One intra-op thread in the test process and in every process it starts (train.py, the experiment runner's runs, DDP
# ranks inherit OMP_NUM_THREADS). On this project's 2-core machine, shared while the tests run (a train.py subprocess
# beside the waiting test process, two DDP ranks, other users), two OpenMP threads wait on each other at every
# operator: a step of the tests' narrow ResNet-18 took 0.74-1.13 s with two threads against 0.02-0.06 s with one, on
# the loaded machine. Both runs a test compares share the setting. OMP_NUM_THREADS set before pytest starts wins.
TORCH_THREADS = int(os.environ.setdefault("OMP_NUM_THREADS", "1"))
torch.set_num_threads(TORCH_THREADS)

CHEST_FINDINGS = 14


def write_medmnist_npz(
    path: Path,
    sizes: tuple[int, int, int] = (60, 20, 20),
    image_size: int = 28,
    channels: int = 1,
    num_classes: int = 9,
    multilabel: bool = False,
    seed: int = 0,
) -> Path:
    """Writes a small, learnable data set in MedMNIST key layout and returns its path.

    Images are uint8 ``N x S x S`` (``channels=1``) or ``N x S x S x 3`` with low noise (0..59) plus a bright
    (200) pattern that a model can learn: multi-class, a horizontal band whose row depends on the class;
    multi-label, one square per present finding on a 4 x 4 grid. Labels are uint8 ``(N, 1)`` class indices
    (every class in every split when N >= num_classes) or ``(N, num_classes)`` 0/1 findings (every finding
    both present and absent in every split).

    Args:
        path: the file to write (name it ``{flag}.npz`` or ``{flag}_{size}.npz`` for ``MedMNISTSource``).
        sizes: images in train, val, test.
        image_size: side ``S`` in pixels (at least 16).
        channels: 1 (stored ``N x S x S``) or 3 (stored ``N x S x S x 3``).
        num_classes: classes (multi-class) or findings (multi-label, at most 16).
        multilabel: write 0/1 findings instead of class indices.
        seed: seeds noise and labels.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, count in zip(("train", "val", "test"), sizes, strict=True):
        images = rng.integers(0, 60, size=(count, image_size, image_size, channels), dtype=np.uint8)
        if multilabel:
            labels = (rng.random((count, num_classes)) < 0.3).astype(np.uint8)
            for column in labels.T:  # a view: both values in every split, so per-finding AUC is defined
                if column.all():
                    column[0] = 0
                if not column.any():
                    column[0] = 1
            cell = image_size // 4
            for index, finding in zip(*np.nonzero(labels), strict=True):
                row, col = divmod(int(finding), 4)
                images[index, row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = 200
        else:
            labels = rng.permutation(np.arange(count) % num_classes).astype(np.uint8)[:, None]
            band = max(1, image_size // num_classes)
            for index, label in enumerate(labels[:, 0]):
                images[index, label * band : (label + 1) * band] = 200
        arrays[f"{split}_images"] = images[..., 0] if channels == 1 else images
        arrays[f"{split}_labels"] = labels
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def make_medmnist_npz(tmp_path: Path) -> Callable[..., Path]:
    """``make_medmnist_npz(name, **kwargs)`` writes ``tmp_path / name`` with :func:`write_medmnist_npz`."""

    def make(name: str, **kwargs: object) -> Path:
        return write_medmnist_npz(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def chest_npz(tmp_path: Path) -> Path:
    """ChestMNIST-like ``tmp_path/chestmnist.npz``: 60/20/20 grayscale 28 x 28 images, uint8 (N, 14) findings.

    Load it with ``MedMNISTSource("chestmnist", root=str(chest_npz.parent))`` or ``NpzSource(str(chest_npz))``.
    """
    return write_medmnist_npz(tmp_path / "chestmnist.npz", num_classes=CHEST_FINDINGS, multilabel=True)


@pytest.fixture
def multiclass_npz(tmp_path: Path) -> Path:
    """PathMNIST-like ``tmp_path/pathmnist.npz``: 60/20/20 RGB 28 x 28 x 3 images, uint8 (N, 1) labels, 9 classes.

    Load it with ``MedMNISTSource("pathmnist", root=str(multiclass_npz.parent))`` or ``NpzSource(...)``.
    """
    return write_medmnist_npz(tmp_path / "pathmnist.npz", channels=3, num_classes=9, seed=1)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``reference_run(config, *options)``: the run folder of an uninterrupted ``train.py`` run, made once per
    session for each (config, options) and shared by the tests that compare other runs against it.

    Run in this process (``train_in_process``: the same CLI and settings, one torch thread as in the subprocesses),
    which saves the ~5-10 s of imports a new interpreter pays; the runs compared against it are subprocesses, so the
    comparison also checks that a run does not depend on the process it runs in."""
    from tests.helpers.cli_runs import train_in_process

    folders: dict[tuple[str, ...], Path] = {}

    def run(config: str, *options: str) -> Path:
        key = (config, *options)
        if key not in folders:
            folder = tmp_path_factory.mktemp("reference")
            result = train_in_process(config, folder, *options)
            assert result.returncode == 0, result.stderr[-3000:]
            folders[key] = folder / Path(config).stem / "seed_0"
        return folders[key]

    return run
