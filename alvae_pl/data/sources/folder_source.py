"""A lab's own images: a folder of image files and CSVs holding the labels known so far."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, UnidentifiedImageError

from alvae_pl.data.image_data import UNKNOWN_TARGET, ImageData, ImageSplit, TaskKind
from alvae_pl.data.image_store import SPLITS, RowReader, Staging, StorePlan, UnreadableRow, unreadable_error
from alvae_pl.data.label_table import LabelRows, natural_order, parse_labels, read_label_rows
from alvae_pl.data.sources.base import ImageSource, one_line_reason

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
#: How many files a message about many images names before "and N more".
_NAMED = 5
#: Staged rows checked for color at a time (3 x 224 x 224 bytes each).
_GRAY_CHUNK = 256


class FolderSource(ImageSource):
    """Image files in a folder (the pool), with the labels known so far in a CSV.

    The pool is every image file under ``images`` (PNG, JPEG, TIFF or BMP, searched recursively, sorted by
    relative path), less the files the validation or test CSV names when those live in the same folder. Pool
    images that ``labels`` does not name have no label yet (``UNKNOWN_TARGET``): a run labels them through its
    oracle (``active.oracle``), the human expert (:class:`~alvae_pl.oracles.HumanOracle`) answering a query at
    the end of each round.

    Every image is read with PIL, resized to ``image_size`` x ``image_size`` (bilinear; a non-square image is
    stretched, with a warning naming such images, so crop beforehand if their aspect matters) and kept as uint8.
    16-bit images (medical TIFF/PNG) are scaled to 8 bits by ``/ 257``. Unreadable images are all reported at once:
    one error naming how many and the first few, every one of them listed on the lines below.

    With ``color: auto`` the majority decides: when most images are gray (R = G = B), every image gets one channel
    and the few color ones are made gray (ITU-R 601 luma); when most are color (or as many as are gray), every image
    gets three and the gray ones are repeated. Either conversion is a warning naming how many images it touched and
    one of them; set ``color`` to decide it yourself.

    A folder too big for memory is streamed into an :class:`~alvae_pl.data.image_store.ImageStore` one image at a
    time (:meth:`plan_rows`, used when ``data.image_store`` is set): the store holds what :meth:`load` returns.

    Labels CSVs (see :mod:`alvae_pl.data.label_table`): ``file,label`` with class names (multi-class), or
    ``file,<finding>,<finding>...`` with 0/1 cells (multi-label); file names are relative to the images' folder.

    Args:
        images: the folder of pool images.
        labels: CSV of the pool images labeled so far; ``None``: none yet.
        val_labels: CSV of the labeled validation images (required: every round is evaluated on them).
        test_labels: CSV of labeled test images; ``None``: no test split (rounds are evaluated on validation only).
        val_images: the folder the validation CSV's file names are relative to; ``None``: ``images`` (those
            images are then taken out of the pool).
        test_images: the same for the test CSV.
        task: ``auto`` reads a ``label`` column as multi-class and finding columns as multi-label.
        classes: the class names, in the order of the model's outputs (multi-class). ``None``: every class
            named in the three CSVs, in natural order. List them when the labels so far miss a class the expert
            may answer later: the model's outputs are fixed at the start.
        image_size: side of the square images the model sees, in pixels.
        color: ``auto`` follows the majority of the images (see above); ``grayscale`` or ``rgb`` forces one.

    Example YAML::

        source:
          class_path: alvae_pl.data.sources.FolderSource
          init_args: {images: lab/scans, labels: lab/labels.csv, val_labels: lab/val.csv, image_size: 64}
    """

    def __init__(
        self,
        images: str,
        labels: str | None = None,
        val_labels: str | None = None,
        test_labels: str | None = None,
        val_images: str | None = None,
        test_images: str | None = None,
        task: Literal["auto", "multiclass", "multilabel"] = "auto",
        classes: list[str] | None = None,
        image_size: int = 28,
        color: Literal["auto", "grayscale", "rgb"] = "auto",
    ):
        if task not in ("auto", "multiclass", "multilabel"):
            raise ValueError(f"task={task!r}; choose one of 'auto', 'multiclass', 'multilabel'")
        if color not in ("auto", "grayscale", "rgb"):
            raise ValueError(f"color={color!r}; choose one of 'auto', 'grayscale', 'rgb'")
        if image_size < 1:
            raise ValueError(f"image_size={image_size}; it must be a positive number of pixels, e.g. 28")
        self.images = images
        self.labels = labels
        self.val_labels = val_labels
        self.test_labels = test_labels
        self.val_images = val_images
        self.test_images = test_images
        self.task = task
        self.classes = classes
        self.image_size = image_size
        self.color = color

    def load(self) -> ImageData:
        """Reads the labels CSVs and every image.

        Returns:
            Images uint8 ``[N, C, image_size, image_size]``; train targets with ``UNKNOWN_TARGET`` for pool
            images not labeled yet; ``train_files`` the pool's file names.

        Raises:
            FileNotFoundError: a folder or CSV does not exist.
            ValueError: an unreadable image, a CSV naming an image that is not there, a duplicate row, an
                unknown class, or a validation CSV missing; the message names the file (and line).
        """
        layout = self._layout()
        every_path = layout.every_path()
        read = _read_images(every_path, self.image_size)
        _warn_stretched(every_path, np.array([size for _, size in read], dtype=np.int64), self.image_size)
        channels = self._channels(np.array([_is_gray(array) for array, _ in read], dtype=bool), every_path)
        splits, cursor = {}, 0
        for split in SPLITS:
            arrays = [array for array, _ in read[cursor : cursor + len(layout.paths[split])]]
            cursor += len(arrays)
            splits[split] = ImageSplit(images=_stack(arrays, channels, self.image_size), targets=layout.targets[split])
        return ImageData(
            train=splits["train"],
            val=splits["val"],
            test=splits["test"],
            task=layout.task,
            class_names=layout.class_names,
            train_files=layout.files["train"],
            val_files=layout.files["val"],
            test_files=layout.files["test"],
        )

    def plan_rows(self) -> tuple[StorePlan, RowReader]:
        """The folder's files, targets and class names (the CSVs and the listing, no pixels), and the reader of one
        image, so that an :class:`~alvae_pl.data.image_store.ImageStore` is written one image at a time and holds
        exactly what :meth:`load` returns.

        With ``color`` set, each image is read straight into its final channels. With ``color: auto`` the
        majority of every image decides, which one pass cannot know up front: the images are read as RGB into a
        staging array, and once all are read the same rule as :meth:`load` (with its warning) picks 1 or 3
        channels and a second, chunked pass over the staged pixels writes the final array. Unreadable images are
        listed in one error at the end of the build; the stretched-image warning is given once the build is done.

        Raises:
            FileNotFoundError, ValueError: as :meth:`load`, for the folders and CSVs (before any image is read).
        """
        layout = self._layout()
        size, every_path = self.image_size, layout.every_path()
        channels = {"auto": None, "grayscale": 1, "rgb": 3}[self.color]
        counts = {split: len(layout.paths[split]) for split in SPLITS}
        # Each image's size in its file, recorded as it is read, for the stretched-image warning at the end; a
        # resumed build looks up the headers of the images read before it started.
        sizes = {split: np.full((count, 2), -1, dtype=np.int64) for split, count in counts.items()}

        def read(split: str, row: int) -> np.ndarray:
            path = layout.paths[split][row]
            try:
                array, original = _read_image(path, size)
            except _Unreadable as error:
                raise UnreadableRow(str(path), error.reason) from None
            sizes[split][row] = original
            return _stack([array], channels or 3, size)[0].numpy()

        def built() -> None:
            every_size = np.concatenate([sizes[split] for split in SPLITS])
            for index in np.flatnonzero(every_size[:, 0] < 0):
                try:
                    with Image.open(every_path[index]) as image:  # the header only: no pixels are decoded
                        every_size[index] = image.size
                except (OSError, UnidentifiedImageError):  # gone since it was read: its size is unknown, not named
                    continue
            _warn_stretched(every_path, every_size, size)

        staging = None
        if channels is None:
            staging = Staging(
                channels=lambda staged: self._channels(
                    np.concatenate([_gray_rows(staged[split]) for split in SPLITS]), every_path
                ),
                to_gray=_to_gray,
            )
        plan = StorePlan(
            shape=(channels or 3, size, size),
            targets=layout.targets,
            task=layout.task,
            class_names=layout.class_names,
            files=layout.files,
            staging=staging,
            built=built,
        )
        return plan, read

    def _layout(self) -> _Layout:
        """The CSVs and the folder listing: every split's image paths, file names and targets, no pixels read."""
        root = _folder(self.images, "images")
        if self.val_labels is None:
            raise ValueError(
                "FolderSource needs labeled validation images, on which every round is evaluated: set "
                "data.source.init_args.val_labels to a CSV of them"
            )
        tables = {"train": read_label_rows(self.labels) if self.labels is not None else None}
        tables["val"] = read_label_rows(self.val_labels)
        tables["test"] = read_label_rows(self.test_labels) if self.test_labels is not None else None
        present = [table for table in tables.values() if table is not None]
        task = self._task(present)
        names = self._class_names(task, present)

        folders = {
            "train": root,
            "val": _folder(self.val_images, "val_images") if self.val_images is not None else root,
            "test": _folder(self.test_images, "test_images") if self.test_images is not None else root,
        }
        pool_files = _image_files(root)
        set_aside = {
            name
            for split in ("val", "test")
            if tables[split] is not None and folders[split] == root
            for name in parse_labels(tables[split], task, names).files
        }
        pool_files = [name for name in pool_files if name not in set_aside]
        if not pool_files:
            raise ValueError(f"{root} holds no pool images ({', '.join(IMAGE_SUFFIXES)}) besides validation/test ones")

        targets: dict[str, torch.Tensor] = {}
        unknown_row = UNKNOWN_TARGET if task == "multiclass" else [UNKNOWN_TARGET] * len(names)
        train_targets = torch.tensor([unknown_row] * len(pool_files), dtype=torch.int64)
        if tables["train"] is not None:
            labels = parse_labels(tables["train"], task, names)
            position = {name: i for i, name in enumerate(pool_files)}
            for name, line in zip(labels.files, labels.lines, strict=True):
                if name not in position:
                    where = "is a validation/test image" if name in set_aside else f"is not an image in {root}"
                    raise ValueError(f"{tables['train'].path} line {line}: {name} {where}")
            if labels.files:
                train_targets[[position[name] for name in labels.files]] = labels.targets
        paths = {"train": [root / name for name in pool_files]}
        files: dict[str, tuple[str, ...]] = {"train": tuple(pool_files)}
        targets["train"] = train_targets
        for split in ("val", "test"):
            table = tables[split]
            if table is None:
                paths[split], files[split] = [], ()
                targets[split] = torch.empty((0, *train_targets.shape[1:]), dtype=torch.int64)
                continue
            labels = parse_labels(table, task, names)
            for name, line in zip(labels.files, labels.lines, strict=True):
                if not (folders[split] / name).is_file():
                    raise ValueError(f"{table.path} line {line}: no image {name} in {folders[split]}")
            paths[split], files[split] = [folders[split] / name for name in labels.files], labels.files
            targets[split] = labels.targets
        if not paths["val"]:
            raise ValueError(f"{tables['val'].path} names no images; validation needs at least one labeled image")
        return _Layout(task, names, paths, files, targets)

    def _task(self, tables: list[LabelRows]) -> TaskKind:
        kinds = {table.task() for table in tables}
        if len(kinds) > 1:
            raise ValueError(
                f"{', '.join(str(t.path) for t in tables)}: some have a 'label' column (multi-class) and some "
                "finding columns (multi-label); use one layout"
            )
        found = kinds.pop()
        if self.task != "auto" and self.task != found:
            raise ValueError(f"{tables[0].path}: data.source task is {self.task} but the CSV layout is {found}")
        return found

    def _class_names(self, task: TaskKind, tables: list[LabelRows]) -> tuple[str, ...]:
        if task == "multilabel":
            findings = tables[0].finding_columns()
            for table in tables[1:]:
                if set(table.finding_columns()) != set(findings):
                    raise ValueError(f"{table.path}: its finding columns differ from those of {tables[0].path}")
            if self.classes is not None and set(self.classes) != set(findings):
                raise ValueError(f"{tables[0].path}: finding columns {', '.join(findings)} differ from classes")
            return tuple(self.classes) if self.classes is not None else findings
        if self.classes is not None:
            if len(set(self.classes)) != len(self.classes) or not self.classes:
                raise ValueError(f"classes={self.classes}: list each class name once")
            return tuple(self.classes)
        names = set().union(*(table.class_names() for table in tables))
        if len(names) < 2:
            raise ValueError(
                f"the labels name {len(names)} class(es); list every class in data.source.init_args.classes"
            )
        return natural_order(names)

    def _channels(self, gray: np.ndarray, paths: Sequence[Path]) -> int:
        """1 or 3: ``color`` if set, else the majority's (a tie keeps color), with a warning for the converted ones.

        Args:
            gray: bool ``[N]``, whether each image has no color (:func:`_is_gray`).
            paths: the ``N`` images' paths, for naming one converted image.
        """
        if self.color != "auto":
            return 1 if self.color == "grayscale" else 3
        total, color = len(gray), int((~gray).sum())
        if not color:
            return 1
        if color < total - color:
            first_color = paths[int(np.argmin(gray))]
            rank_zero_warn(
                f"{color} of {total} images are color (e.g. {first_color}) and were made grayscale, as most "
                "images are gray: set data.source.init_args.color: rgb to keep color"
            )
            return 1
        if color < total:
            first_gray = paths[int(np.argmax(gray))]
            rank_zero_warn(
                f"{total - color} of {total} images are grayscale (e.g. {first_gray}) and were "
                "converted to RGB (repeated to 3 channels), as at least half the images are color: set "
                "data.source.init_args.color: grayscale to make every image gray"
            )
        return 3


@dataclass(frozen=True)
class _Layout:
    """A folder data set less its pixels: split -> image paths, file names (relative) and int64 targets."""

    task: TaskKind
    class_names: tuple[str, ...]
    paths: dict[str, list[Path]]
    files: dict[str, tuple[str, ...]]
    targets: dict[str, torch.Tensor]

    def every_path(self) -> list[Path]:
        """The paths of train, validation and test images, in that order (the order images are read in)."""
        return [path for split in SPLITS for path in self.paths[split]]


def _is_gray(array: np.ndarray) -> bool:
    """Whether an image read by :func:`_read_image` has no color: one channel, or R = G = B everywhere."""
    return array.ndim == 2 or (
        np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2])
    )


def _read_images(paths: Sequence[Path], size: int) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Every image read (:func:`_read_image`); all unreadable ones reported in one error.

    Raises:
        ValueError: its first line names how many images are unreadable and the first few; the lines below list
            every one with its reason.
    """
    read, unreadable = [], []
    for path in paths:
        try:
            read.append(_read_image(path, size))
        except _Unreadable as error:
            unreadable.append((path, error.reason))
    if unreadable:
        raise unreadable_error([(str(path), reason) for path, reason in unreadable])
    return read


def _warn_stretched(paths: Sequence[Path], sizes: np.ndarray, size: int) -> None:
    """Warns about images whose width and height differ: resizing them to a square stretches them.

    Args:
        paths: the ``N`` images' paths.
        sizes: int ``[N, 2]``, each image's ``(width, height)`` in its file.
    """
    stretched = np.flatnonzero(sizes[:, 0] != sizes[:, 1])
    if not len(stretched):
        return
    named = ", ".join(f"{paths[i]} ({sizes[i, 0]} x {sizes[i, 1]})" for i in stretched[:_NAMED])
    more = f" and {len(stretched) - _NAMED} more" if len(stretched) > _NAMED else ""
    rank_zero_warn(
        f"{len(stretched)} of {len(paths)} images are not square and were stretched to {size} x {size}: {named}{more}; "
        "crop them to squares beforehand if their shape matters"
    )


def _folder(path: str, setting: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: set data.source.init_args.{setting} to the image folder")
    return folder


def _image_files(root: Path) -> list[str]:
    """Image files under ``root``, as sorted relative POSIX paths; hidden files and folders skipped."""
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        hidden = any(part.startswith(".") for part in relative.parts)
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not hidden:
            found.append(relative.as_posix())
    return sorted(found)


class _Unreadable(Exception):
    """An image PIL cannot read; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _read_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """One image as uint8 ``[size, size]`` (gray) or ``[size, size, 3]`` (color), and its size ``(width, height)``
    in the file."""
    try:
        with Image.open(path) as image:
            image.load()
            original = image.size
            if image.mode in _SIXTEEN_BIT_MODES:
                pixels = np.asarray(image, dtype=np.float32) / 257.0
                image = Image.fromarray(pixels.clip(0, 255), mode="F")
            elif image.mode in ("1", "L", "LA"):
                image = image.convert("L")
            else:
                image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise _Unreadable(one_line_reason(error)) from None
    return (array.round().clip(0, 255).astype(np.uint8) if array.dtype != np.uint8 else array), original


def _stack(arrays: list[np.ndarray], channels: int, size: int) -> torch.Tensor:
    """uint8 ``[N, channels, size, size]``; gray images repeated to 3 channels, color ones averaged to 1."""
    out = np.empty((len(arrays), channels, size, size), dtype=np.uint8)
    for i, array in enumerate(arrays):
        if array.ndim == 2:
            out[i] = array[None]
        elif channels == 3:
            out[i] = array.transpose(2, 0, 1)
        else:
            out[i, 0] = _luma(array)
    return torch.from_numpy(out)


def _luma(array: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[H, W]``: ITU-R 601 luma, as PIL's ``convert("L")``."""
    luma = np.ascontiguousarray(array).astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return luma.round().clip(0, 255).astype(np.uint8)


def _gray_rows(staged: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 3, H, W]`` (memory-mapped) -> bool ``[N]``: whether each row has R = G = B, read a few hundred
    rows at a time so that memory stays a chunk's size."""
    gray = np.zeros(len(staged), dtype=bool)
    for start in range(0, len(staged), _GRAY_CHUNK):
        rows = np.asarray(staged[start : start + _GRAY_CHUNK])
        gray[start : start + len(rows)] = ((rows[:, 0] == rows[:, 1]) & (rows[:, 1] == rows[:, 2])).all(axis=(1, 2))
    return gray


def _to_gray(row: np.ndarray) -> np.ndarray:
    """A staged row uint8 ``[3, H, W]`` -> uint8 ``[1, H, W]``, as :func:`_stack` makes it: a gray image keeps its
    (repeated) channel, a color one becomes its luma."""
    if np.array_equal(row[0], row[1]) and np.array_equal(row[1], row[2]):
        return row[:1].copy()
    return _luma(row.transpose(1, 2, 0))[None]
