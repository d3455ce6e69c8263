"""A lab's own images: a folder of image files and CSVs holding the labels known so far."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, UnidentifiedImageError

from alvae_pl.data.image_data import UNKNOWN_TARGET, ImageData, ImageSplit, TaskKind
from alvae_pl.data.label_table import LabelRows, natural_order, parse_labels, read_label_rows
from alvae_pl.data.sources.base import ImageSource, one_line_reason

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
#: How many files a message about many images names before "and N more".
_NAMED = 5


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

        arrays: dict[str, list[np.ndarray]] = {}
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
        every_path = [path for split in paths.values() for path in split]
        read = _read_images(every_path, self.image_size)
        _warn_stretched(every_path, [size for _, size in read], self.image_size)
        cursor = 0
        for split in ("train", "val", "test"):
            arrays[split] = [array for array, _ in read[cursor : cursor + len(paths[split])]]
            cursor += len(paths[split])

        channels = self._channels([a for split in arrays.values() for a in split], every_path)
        splits = {
            split: ImageSplit(images=_stack(arrays[split], channels, self.image_size), targets=targets[split])
            for split in arrays
        }
        return ImageData(
            train=splits["train"],
            val=splits["val"],
            test=splits["test"],
            task=task,
            class_names=names,
            train_files=files["train"],
            val_files=files["val"],
            test_files=files["test"],
        )

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

    def _channels(self, arrays: list[np.ndarray], paths: Sequence[Path]) -> int:
        """1 or 3: ``color`` if set, else the majority's (a tie keeps color), with a warning for the converted ones."""
        if self.color != "auto":
            return 1 if self.color == "grayscale" else 3
        gray = [_is_gray(a) for a in arrays]
        color = [path for path, is_gray in zip(paths, gray, strict=True) if not is_gray]
        if not color:
            return 1
        if len(color) < len(arrays) - len(color):
            rank_zero_warn(
                f"{len(color)} of {len(arrays)} images are color (e.g. {color[0]}) and were made grayscale, as most "
                "images are gray: set data.source.init_args.color: rgb to keep color"
            )
            return 1
        if len(color) < len(arrays):
            first_gray = next(path for path, is_gray in zip(paths, gray, strict=True) if is_gray)
            rank_zero_warn(
                f"{len(arrays) - len(color)} of {len(arrays)} images are grayscale (e.g. {first_gray}) and were "
                "converted to RGB (repeated to 3 channels), as at least half the images are color: set "
                "data.source.init_args.color: grayscale to make every image gray"
            )
        return 3


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
        shown = ", ".join(str(path) for path, _ in unreadable[:3])
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        listing = "".join(f"\n  {path}: {reason}" for path, reason in unreadable)
        count = "1 image is" if len(unreadable) == 1 else f"{len(unreadable)} images are"
        raise ValueError(
            f"{count} not readable ({shown}{more}; each listed below): replace or remove them, then run again{listing}"
        )
    return read


def _warn_stretched(paths: Sequence[Path], sizes: Sequence[tuple[int, int]], size: int) -> None:
    """Warns about images whose width and height differ: resizing them to a square stretches them."""
    stretched = [(path, width, height) for path, (width, height) in zip(paths, sizes, strict=True) if width != height]
    if not stretched:
        return
    named = ", ".join(f"{path} ({width} x {height})" for path, width, height in stretched[:_NAMED])
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
        else:  # ITU-R 601 luma, as PIL's convert("L")
            luma = array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            out[i, 0] = luma.round().clip(0, 255).astype(np.uint8)
    return torch.from_numpy(out)
