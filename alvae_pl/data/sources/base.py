"""The interface every data source implements, and the reader for MedMNIST-layout ``.npz`` files."""

from __future__ import annotations

import zipfile
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from alvae_pl.data.image_data import ImageData, ImageSplit, TaskKind
from alvae_pl.data.image_store import RowReader, StorePlan

SPLITS: tuple[str, ...] = ("train", "val", "test")
NPZ_KEYS: tuple[str, ...] = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels"))


class ImageSource(ABC):
    """Where a data set comes from: a MedMNIST flag, torchvision MNIST, sklearn digits or a user's file.

    A source's constructor only records (and cheaply checks) its arguments, so that LightningCLI can build
    it from YAML (``class_path`` / ``init_args``) without touching the disk; ``load()`` does the reading.
    """

    @abstractmethod
    def load(self) -> ImageData:
        """Reads the data set into memory.

        Returns:
            Train, validation and test splits with uint8 ``[N, C, H, W]`` images and int64 targets
            (``[N]`` class indices or ``[N, K]`` 0/1 findings), the task kind and the class names.
        """

    def plan_rows(self) -> tuple[StorePlan, RowReader] | None:
        """For a source that can read one image at a time: its data less the pixels, and the reader of one image
        (``read(split, row)`` -> uint8 ``[C, H, W]``), so that an :class:`~alvae_pl.data.image_store.ImageStore`
        is written without holding the pool in memory. ``None`` (the default): the source reads everything at once.
        """
        return None


def read_medmnist_npz(
    path: str | Path,
    task: Literal["auto", "multiclass", "multilabel"] = "auto",
    class_names: tuple[str, ...] | list[str] | None = None,
) -> ImageData:
    """Reads an ``.npz`` file in MedMNIST key layout into memory.

    The file holds ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images`` and
    ``test_labels``. Images are uint8 ``N x H x W`` (grayscale) or ``N x H x W x C`` with ``C`` 1 or 3
    (channels last, as MedMNIST stores them); labels are ``(N,)`` or ``(N, 1)`` class indices or ``(N, K)``
    0/1 findings.

    Args:
        path: the ``.npz`` file.
        task: ``"multiclass"`` or ``"multilabel"`` to insist on one; ``"auto"`` takes ``(N,)``/``(N, 1)``
            labels as class indices and ``(N, K)`` 0/1 labels with ``K > 1`` as findings.
        class_names: one name per class (multi-class: at least ``max label + 1``) or per finding
            (multi-label: exactly ``K``). ``None``: ``"0"``, ``"1"``, ...

    Returns:
        The three splits with images uint8 ``[N, C, H, W]`` and targets int64 ``[N]`` (multi-class) or
        ``[N, K]`` (multi-label).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable ``.npz``, misses a key, or holds arrays of the wrong shape,
            type or value range; the message names the file and the problem.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected an .npz file with keys {', '.join(NPZ_KEYS)}")
    arrays = _read_arrays(path)
    images = {split: _images_to_tensor(path, f"{split}_images", arrays[f"{split}_images"]) for split in SPLITS}
    shapes = {split: tuple(images[split].shape[1:]) for split in SPLITS}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{path}: train, val and test images differ in [C, H, W]: {shapes}")

    labels = {split: _integral_labels(path, f"{split}_labels", arrays[f"{split}_labels"]) for split in SPLITS}
    for split in SPLITS:
        if len(labels[split]) != len(images[split]):
            raise ValueError(
                f"{path}: {split}_images has {len(images[split])} images but {split}_labels has "
                f"{len(labels[split])} labels"
            )
    ndims = {labels[split].shape[1:] for split in SPLITS}
    if len(ndims) != 1:
        raise ValueError(f"{path}: train, val and test labels differ in shape after N: {sorted(ndims)}")

    kind = _resolve_task(path, labels["train"], task)
    if kind == "multiclass":
        targets, names = _multiclass_targets(path, labels, class_names)
    else:
        targets, names = _multilabel_targets(path, labels, class_names)
    splits = {split: ImageSplit(images=images[split], targets=targets[split]) for split in SPLITS}
    return ImageData(train=splits["train"], val=splits["val"], test=splits["test"], task=kind, class_names=names)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Loads the six arrays, turning numpy's and zipfile's many failure modes into one-line ValueErrors."""
    # A truncated download or an HTML error page saved as .npz fails in np.load, or only later, in a member.
    bad_file = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)
    with open(path, "rb") as handle:
        magic = handle.read(6)
    # An .npz is a zip archive (a single .npy array is refused below); anything else would reach numpy's pickle
    # loader, whose message ("allow_pickle=False") says nothing useful about a bad file.
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise ValueError(
            f"{path} is not a readable .npz file (not a zip archive: it starts with {magic!r}): "
            "re-download or re-save it"
        )
    try:
        npz = np.load(path, allow_pickle=False)
    except bad_file as error:
        reason = one_line_reason(error)
        raise ValueError(f"{path} is not a readable .npz file ({reason}): re-download or re-save it") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array, not an .npz archive with keys {', '.join(NPZ_KEYS)}")
    with npz:
        missing = [key for key in NPZ_KEYS if key not in npz.files]
        if missing:
            raise ValueError(
                f"{path} misses key(s) {', '.join(missing)}: an .npz in MedMNIST layout needs "
                f"{', '.join(NPZ_KEYS)} (it has {', '.join(npz.files) or 'none'})"
            )
        arrays: dict[str, np.ndarray] = {}
        for key in NPZ_KEYS:
            try:
                arrays[key] = npz[key]
            except bad_file as error:
                raise ValueError(
                    f"{path}: array {key} is unreadable ({one_line_reason(error)}): re-download or re-save the file"
                ) from None
    return arrays


def _images_to_tensor(path: Path, key: str, array: np.ndarray) -> Tensor:
    """Turns ``N x H x W`` or ``N x H x W x C`` images into a uint8 ``[N, C, H, W]`` tensor."""
    if array.dtype != np.uint8:
        integral = np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_
        if not integral or array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"{path}: {key} is {array.dtype}; images must be uint8 0..255 "
                f"(for floats in [0, 1] save (x * 255).round().astype(np.uint8))"
            )
        array = array.astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] in (1, 3) and array.shape[0] == array.shape[1] != array.shape[2]:
        raise ValueError(
            f"{path}: {key} has shape {array.shape}, one {array.shape[0]} x {array.shape[1]} image with channels "
            f"last; store N x H x W x C (for one image, save array[None])"
        )
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(
            f"{path}: {key} has shape {array.shape}; expected N x H x W (grayscale) or N x H x W x 3 (RGB), "
            f"channels last"
        )
    if len(array) == 0:
        raise ValueError(f"{path}: {key} is empty; every split needs at least one image")
    if array.shape[1] != array.shape[2]:
        raise ValueError(f"{path}: {key} images are {array.shape[1]} x {array.shape[2]}; crop or resize them square")
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def _integral_labels(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    """Checks that labels are ``(N,)`` or ``(N, K)`` whole numbers and returns them as int64."""
    if array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] == 0):
        raise ValueError(f"{path}: {key} has shape {array.shape}; expected (N,), (N, 1) or (N, K)")
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    raise ValueError(f"{path}: {key} is {array.dtype} with non-integer values; labels must be whole numbers")


def _resolve_task(path: Path, train_labels: np.ndarray, task: str) -> TaskKind:
    if task == "multiclass" or task == "multilabel":
        return task
    if task != "auto":
        raise ValueError(f"task={task!r}; choose one of 'auto', 'multiclass', 'multilabel'")
    if train_labels.ndim == 1 or train_labels.shape[1] == 1:
        return "multiclass"
    if np.isin(train_labels, (0, 1)).all():
        return "multilabel"
    raise ValueError(
        f"{path}: train_labels are {train_labels.shape} with values other than 0/1: neither class indices "
        f"(N, 1) nor 0/1 findings (N, K)"
    )


def _multiclass_targets(
    path: Path, labels: dict[str, np.ndarray], class_names: tuple[str, ...] | list[str] | None
) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    """Class indices ``(N,)`` / ``(N, 1)`` -> int64 ``[N]``, checked against the class names."""
    shape = labels["train"].shape
    if len(shape) == 2 and shape[1] != 1:
        raise ValueError(
            f"{path}: labels are (N, {shape[1]}) but the task is multi-class; expected class indices (N,) or (N, 1)"
        )
    flat = {split: labels[split].reshape(-1) for split in SPLITS}
    low = min(int(flat[split].min()) for split in SPLITS)
    high = max(int(flat[split].max()) for split in SPLITS)
    if low < 0:
        raise ValueError(f"{path}: labels contain {low}; class indices must be 0, 1, ...")
    if class_names is None:
        present = set().union(*(np.unique(flat[split]).tolist() for split in SPLITS))
        unused = sorted(set(range(high + 1)) - present)
        if unused:
            shown = ", ".join(map(str, unused[:5])) + (", ..." if len(unused) > 5 else "")
            raise ValueError(
                f"{path}: labels go up to {high} but no image has class {shown}: number the classes 0..K-1 "
                "without gaps, or name every class with class_names"
            )
    names = tuple(map(str, class_names if class_names is not None else range(high + 1)))
    if high >= len(names):
        raise ValueError(f"{path}: labels go up to {high} but there are only {len(names)} class names")
    return {split: torch.from_numpy(flat[split]) for split in SPLITS}, names


def _multilabel_targets(
    path: Path, labels: dict[str, np.ndarray], class_names: tuple[str, ...] | list[str] | None
) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    """0/1 findings ``(N, K)`` -> int64 ``[N, K]``, checked against the finding names."""
    shape = labels["train"].shape
    if len(shape) != 2:
        raise ValueError(f"{path}: labels are {shape} but the task is multi-label; expected 0/1 findings (N, K)")
    num_findings = shape[1]
    names = tuple(map(str, class_names if class_names is not None else range(num_findings)))
    if num_findings != len(names):
        raise ValueError(f"{path}: labels have {num_findings} findings per image but there are {len(names)} names")
    for split in SPLITS:
        if not np.isin(labels[split], (0, 1)).all():
            raise ValueError(
                f"{path}: {split}_labels hold values other than 0/1 but the task is multi-label, whose findings "
                f"are 0 or 1 (class indices are task multiclass)"
            )
    return {split: torch.from_numpy(labels[split]) for split in SPLITS}, names


def one_line_reason(error: BaseException) -> str:
    """``"ErrorType: first line of its message"``, for wrapping a library error into a one-line message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
