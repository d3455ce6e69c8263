"""A data set's images on disk, memory-mapped: written once, then read a batch at a time.

A pool of a million 224 x 224 RGB scans is 150 GB of uint8 pixels: more than a machine's memory, while a batch
is a few MB. An :class:`ImageStore` is a folder holding each split's images as one ``.npy`` array
(``<split>_images.npy``, uint8 ``[N, C, H, W]``), its targets (``<split>_targets.npy``) and ``store.json`` (the
source's settings, what has been written so far). Opened, the images are tensors over a memory map: indexing a
batch reads that batch's pages, so the resident memory of a run grows with its batches and features, not with the
pixels of the pool, and the operating system's page cache keeps what fits.

Writing is resumable: rows are written in chunks, each chunk flushed to disk before ``store.json`` records it, so a
build killed at any moment continues from the last recorded chunk when run again. One process builds a store at a
time (a lock file); the others wait for it and then read the finished store. An image the source cannot read
(:class:`UnreadableRow`) does not stop the build: every one is named in one error at its end, the store stays
unfinished, and the next build reads just those rows again. A source whose channel count depends on every image
(a folder with ``color: auto``) writes RGB rows to staging arrays first, then the final ones (:class:`Staging`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from alvae_pl.atomic_files import atomic_write_text
from alvae_pl.data.image_data import ImageData, ImageSplit, TaskKind

if TYPE_CHECKING:
    from alvae_pl.data.sources.base import ImageSource

#: The layout written by this version; a store of another layout is rebuilt. (2: a planned source's fingerprint
#: covers its files, not its targets, which are read from the source every time.)
STORE_FORMAT = 2
#: The file that describes a store and records how far its build got.
META_FILE = "store.json"
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Rows written between two progress records: a killed build redoes at most this many.
CHUNK_ROWS = 1024

#: ``read(split, row)`` -> uint8 ``[C, H, W]``: one image of a split, as the store will hold it.
RowReader = Callable[[str, int], np.ndarray]


class UnreadableRow(Exception):
    """Raised by a :data:`RowReader` for an image it cannot read: the build goes on and reports every such image
    in one error at its end (see :func:`unreadable_error`); the store stays incomplete until they are readable."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def unreadable_error(unreadable: Sequence[tuple[str, str]]) -> ValueError:
    """One error for every unreadable image, ``(name, reason)`` each: its first line names how many and the first
    few, the lines below list every one with its reason."""
    shown = ", ".join(name for name, _ in unreadable[:3])
    more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
    listing = "".join(f"\n  {name}: {reason}" for name, reason in unreadable)
    count = "1 image is" if len(unreadable) == 1 else f"{len(unreadable)} images are"
    return ValueError(
        f"{count} not readable ({shown}{more}; each listed below): replace or remove them, then run again{listing}"
    )


@dataclass(frozen=True)
class Staging:
    """For a source whose channel count is known only once every image is read (a folder with ``color: auto``).

    The rows are read as RGB into a staging array per split (uint8 ``[N, 3, H, W]``, gray images repeated);
    then ``channels`` decides 1 or 3 from those arrays, and a chunked pass writes the final arrays: the staged
    rows themselves for 3 channels, ``to_gray`` of each row for 1.

    Attributes:
        channels: split -> staged uint8 ``[N, 3, H, W]`` (memory-mapped) -> 1 or 3.
        to_gray: one staged row uint8 ``[3, H, W]`` -> uint8 ``[1, H, W]``.
    """

    channels: Callable[[dict[str, np.ndarray]], int]
    to_gray: Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class StorePlan:
    """Everything about a data set except its pixels: what a store is built to hold.

    Attributes:
        shape: ``(C, H, W)`` of every image.
        targets: split -> int64 ``[N]`` or ``[N, K]`` (the split's size is its number of targets).
        task: multi-class or multi-label.
        class_names: one name per class or finding.
        files: split -> each image's file name, for sources read from files (splits without names left out).
        staging: set when the channel count is decided after reading (``shape`` is then the staged ``(3, H, W)``).
        built: called once after a build that wrote rows has finished (e.g. to warn about what was read).
    """

    shape: tuple[int, int, int]
    targets: dict[str, Tensor]
    task: TaskKind
    class_names: tuple[str, ...]
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    staging: Staging | None = None
    built: Callable[[], None] | None = None

    @property
    def nbytes(self) -> int:
        """The pixels' size in bytes, all splits together."""
        return math.prod(self.shape) * sum(len(targets) for targets in self.targets.values())


def plan_of(data: ImageData) -> StorePlan:
    """The plan of a data set already in memory."""
    shape = tuple(int(size) for size in data.train.images.shape[1:])
    targets = {split: getattr(data, split).targets for split in SPLITS}
    names = {split: getattr(data, f"{split}_files") for split in SPLITS}
    files = {split: tuple(names[split]) for split in SPLITS if names[split] is not None}
    return StorePlan(shape, targets, data.task, data.class_names, files)  # type: ignore[arg-type]


class StoreBusy(RuntimeError):
    """Raised when the store folder cannot be locked for building."""


class ImageStore:
    """A folder holding a data set's splits as memory-mapped ``.npy`` arrays (see the module docstring).

    Args:
        folder: the store's folder (created when built).
        fingerprint: the settings of the source it is built from (JSON values): a store built from other settings
            is refused in one line rather than silently mixed with this source's.
    """

    def __init__(self, folder: str | Path, fingerprint: dict[str, Any]) -> None:
        self.folder = Path(folder).expanduser()
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))

    # ------------------------------------------------------------------ state

    def _meta(self) -> dict[str, Any] | None:
        path = self.folder / META_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def _write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_text(self.folder / META_FILE, json.dumps(meta, indent=1, sort_keys=True) + "\n")

    @property
    def complete(self) -> bool:
        """Whether every row of every split is written (and readable), from this store's fingerprint."""
        meta = self._meta()
        return (
            meta is not None
            and meta.get("format") == STORE_FORMAT
            and meta.get("fingerprint") == self.fingerprint
            and not meta.get("unreadable")
            and all(meta["written"][split] == meta["rows"][split] for split in SPLITS)
        )

    def _finished(self, meta: dict[str, Any]) -> bool:
        return not meta.get("unreadable") and all(meta["written"][split] == meta["rows"][split] for split in SPLITS)

    def _check_source(self, meta: dict[str, Any]) -> None:
        if meta.get("format") == STORE_FORMAT and meta.get("fingerprint") != self.fingerprint:
            theirs, ours = meta.get("fingerprint") or {}, self.fingerprint
            changed = sorted(key for key in set(theirs) | set(ours) if theirs.get(key) != ours.get(key))
            raise ValueError(
                f"the image store {self.folder} was built from other source settings ({', '.join(changed)} differ): "
                "remove that folder to rebuild it, or name another data.image_store"
            )

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Held while building: a second process waits here, then finds the store complete."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".build.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ building

    def build(self, plan: StorePlan, read: RowReader, progress: bool = True) -> None:
        """Writes every row not written yet (all of them for a new store), ``CHUNK_ROWS`` at a time.

        A row whose reader raises :class:`UnreadableRow` is recorded and skipped; the build reads every other row,
        then raises one error naming them all. Run again (once they are replaced), it reads just those rows. A
        finished store of other settings is refused; an unfinished one (e.g. stopped by unreadable files that were
        then removed from the folder) is started again.

        Args:
            plan: what the store holds; must equal the plan an interrupted build started with.
            read: the reader of one row, called for each row in order.
            progress: show a progress bar of the rows written.

        Raises:
            ValueError: the folder holds a finished store built from other source settings, ``read`` returned an
                image of another shape or type than the plan's, or some rows were unreadable.
        """
        with self._lock():
            meta = self._meta()
            if meta is not None and self._finished(meta):
                self._check_source(meta)
            rows = {split: len(plan.targets[split]) for split in SPLITS}
            fresh = (
                meta is None
                or meta.get("format") != STORE_FORMAT
                or meta.get("fingerprint") != self.fingerprint
                or meta.get("rows") != rows
            )
            if fresh:
                meta = self._start(plan, rows)
            elif self._finished(meta):
                return
            key = "read" if plan.staging is not None else "written"
            total, done = sum(rows.values()), sum(meta[key].values()) - len(meta["unreadable"])
            with tqdm(
                total=total, initial=done, desc=f"Image store {self.folder.name}", unit="img", disable=not progress
            ) as bar:
                self._retry(plan, read, meta, bar)
                for split in SPLITS:
                    self._fill(split, plan, read, meta, bar)
            if meta["unreadable"]:
                raise unreadable_error([(name, reason) for _, _, name, reason in meta["unreadable"]])
            if plan.staging is not None:
                self._settle(plan.staging, meta)
            if plan.built is not None:
                plan.built()

    def _rows_file(self, split: str, plan: StorePlan) -> Path:
        """Where the reader's rows go: the staging array when the channel count is decided afterwards."""
        return self.folder / f"{split}_{'staged' if plan.staging is not None else 'images'}.npy"

    def _start(self, plan: StorePlan, rows: dict[str, int]) -> dict[str, Any]:
        for stale in [*self.folder.glob("*_staged.npy"), *self.folder.glob("*_images.npy")]:
            stale.unlink()  # from an earlier store: a staged build writes the final arrays only at its end
        for split in SPLITS:
            np.save(self.folder / f"{split}_targets.npy", plan.targets[split].numpy())
            images = np.lib.format.open_memmap(
                self._rows_file(split, plan), mode="w+", dtype=np.uint8, shape=(rows[split], *plan.shape)
            )
            del images  # the header and the file's size are on disk; the rows come next
        meta = {
            "format": STORE_FORMAT,
            "fingerprint": self.fingerprint,
            "shape": list(plan.shape),
            "task": plan.task,
            "class_names": list(plan.class_names),
            "rows": rows,
            "written": dict.fromkeys(SPLITS, 0),
            "unreadable": [],
        }
        if plan.staging is not None:
            meta["read"] = dict.fromkeys(SPLITS, 0)
        for split, names in plan.files.items():
            atomic_write_text(self.folder / f"{split}_files.json", json.dumps(list(names)))
        self._write_meta(meta)
        return meta

    def _read_row(self, split: str, row: int, plan: StorePlan, read: RowReader) -> np.ndarray:
        image = read(split, row)
        if image.dtype != np.uint8 or tuple(image.shape) != plan.shape:
            raise ValueError(
                f"{split} image {row} is {image.dtype} {list(image.shape)}; the store holds uint8 {list(plan.shape)}"
            )
        return image

    def _fill(self, split: str, plan: StorePlan, read: RowReader, meta: dict[str, Any], bar: tqdm) -> None:
        key = "read" if plan.staging is not None else "written"
        count, start = meta["rows"][split], meta[key][split]
        if start == count:
            return
        images = np.load(self._rows_file(split, plan), mmap_mode="r+")
        for chunk_start in range(start, count, CHUNK_ROWS):
            chunk_end = min(chunk_start + CHUNK_ROWS, count)
            skipped = 0
            for row in range(chunk_start, chunk_end):
                try:
                    images[row] = self._read_row(split, row, plan, read)
                except UnreadableRow as error:  # left zero, recorded with this chunk, read again by the next build
                    meta["unreadable"].append([split, row, error.name, error.reason])
                    skipped += 1
            images.flush()  # the rows are on disk before the record says so
            meta[key][split] = chunk_end
            self._write_meta(meta)
            bar.update(chunk_end - chunk_start - skipped)
        del images

    def _retry(self, plan: StorePlan, read: RowReader, meta: dict[str, Any], bar: tqdm) -> None:
        """Reads again the rows an earlier build found unreadable; those still unreadable stay recorded."""
        if not meta["unreadable"]:
            return
        still = []
        arrays = {split: np.load(self._rows_file(split, plan), mmap_mode="r+") for split in SPLITS}
        for split, row, _, _ in meta["unreadable"]:
            try:
                arrays[split][row] = self._read_row(split, row, plan, read)
                bar.update(1)
            except UnreadableRow as error:
                still.append([split, row, error.name, error.reason])
        for images in arrays.values():
            images.flush()
        meta["unreadable"] = still
        self._write_meta(meta)

    def _settle(self, staging: Staging, meta: dict[str, Any]) -> None:
        """Decides the channel count from the staged rows, then writes the final arrays ``CHUNK_ROWS`` at a time
        (each chunk recorded, so a killed pass resumes) and removes the staging arrays."""
        staged_files = {split: self.folder / f"{split}_staged.npy" for split in SPLITS}
        if "channels" not in meta:
            staged = {split: np.load(path, mmap_mode="r") for split, path in staged_files.items()}
            meta["channels"] = int(staging.channels(staged))
            del staged
            self._write_meta(meta)
        channels, shape = meta["channels"], meta["shape"][1:]
        for split, path in staged_files.items():
            count, start = meta["rows"][split], meta["written"][split]
            final = self.folder / f"{split}_images.npy"
            if start == count and final.is_file():  # (an empty split still gets its empty array)
                continue
            if channels == 3:  # the staged rows are the final ones
                if path.exists():
                    path.replace(final)
                meta["written"][split] = count
                self._write_meta(meta)
                continue
            staged = np.load(path, mmap_mode="r")
            if start == 0:
                del staged
                np.lib.format.open_memmap(final, mode="w+", dtype=np.uint8, shape=(count, 1, *shape))
                staged = np.load(path, mmap_mode="r")
            images = np.load(final, mmap_mode="r+")
            for chunk_start in range(start, count, CHUNK_ROWS):
                chunk_end = min(chunk_start + CHUNK_ROWS, count)
                for row in range(chunk_start, chunk_end):
                    images[row] = staging.to_gray(np.asarray(staged[row]))
                images.flush()
                meta["written"][split] = chunk_end
                self._write_meta(meta)
            del images, staged
        meta["shape"] = [channels, *shape]
        self._write_meta(meta)
        for path in staged_files.values():
            path.unlink(missing_ok=True)

    def write(self, data: ImageData, progress: bool = True) -> None:
        """Builds the store from a data set already in memory (sources that cannot read one image at a time)."""
        splits = {split: getattr(data, split).images for split in SPLITS}
        self.build(plan_of(data), lambda split, row: splits[split][row].numpy(), progress=progress)

    def remove(self) -> None:
        """Deletes the store's folder."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------ reading

    def open(self, plan: StorePlan | None = None) -> ImageData:
        """The finished store as an :class:`ImageData` whose images are memory-mapped (not read into memory).

        Args:
            plan: the plan of the source the store was built from, if it plans its rows: its targets, task and
                class names are the ones used (a lab's labels file may have changed since the build; the pixels
                have not, or the fingerprint would differ); without it, those the store recorded.

        Raises:
            ValueError: the store is not complete, or was built from other source settings.
        """
        meta = self._meta()
        if meta is None or not self.complete:
            if meta is not None:
                self._check_source(meta)
            raise ValueError(f"the image store {self.folder} is not complete: build it first (ImageStore.build)")
        splits = {}
        for split in SPLITS:
            # Copy-on-write: the array is writable (torch wants that) but a write would stay in this process's memory,
            # never reaching the file; nothing here writes to images.
            images = np.load(self.folder / f"{split}_images.npy", mmap_mode="c")
            targets = (
                plan.targets[split]
                if plan is not None
                else torch.from_numpy(np.load(self.folder / f"{split}_targets.npy"))
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                splits[split] = ImageSplit(images=torch.from_numpy(images), targets=targets)
        files = {}
        for split in SPLITS:
            path = self.folder / f"{split}_files.json"
            files[f"{split}_files"] = tuple(json.loads(path.read_text())) if path.is_file() else None
        return ImageData(
            train=splits["train"],
            val=splits["val"],
            test=splits["test"],
            task=plan.task if plan is not None else meta["task"],
            class_names=tuple(plan.class_names if plan is not None else meta["class_names"]),
            **files,
        )


def source_fingerprint(source: object, plan: StorePlan | None = None) -> dict[str, Any]:
    """What identifies a source's pixels: its class and settings, and (for a source that plans its rows) its rows per
    split and a digest of its file names, so that a folder whose files changed is not read from a store of the old
    ones. Not its targets: a labels file edited between runs (more labels, a corrected one) reuses the store, whose
    :meth:`ImageStore.open` then takes the targets from the plan."""
    cls = type(source)
    settings = {key: value for key, value in vars(source).items() if not key.startswith("_")}
    fingerprint: dict[str, Any] = {"source": f"{cls.__module__}.{cls.__qualname__}", **settings}
    if plan is not None:
        digest = hashlib.sha256()
        for split in SPLITS:
            digest.update("\n".join(plan.files.get(split, ())).encode() + b"\0")
        fingerprint["rows"] = {split: len(plan.targets[split]) for split in SPLITS}
        fingerprint["content"] = digest.hexdigest()
    return fingerprint


def load_through_store(
    source: ImageSource, folder: str | Path, memory_cap_gb: float, progress: bool = True
) -> ImageData:
    """A source's data, held in memory when its pixels fit under ``memory_cap_gb`` and memory-mapped from an
    :class:`ImageStore` in ``folder`` otherwise.

    A source that reads one image at a time (``ImageSource.plan_rows``) is streamed into the store without ever
    holding the pool in memory; any other source is read into memory once, written to the store, and released. A
    complete store built from the same settings is opened without reading the source's images again.
    """
    planned = source.plan_rows()
    plan = planned[0] if planned is not None else None
    store = ImageStore(folder, source_fingerprint(source, plan))
    if store.complete:
        return store.open(plan)
    if plan is not None:
        if plan.nbytes <= memory_cap_gb * 2**30:
            return source.load()
        store.build(plan, planned[1], progress=progress)
        return store.open(plan)
    data = source.load()
    if plan_of(data).nbytes <= memory_cap_gb * 2**30:
        return data
    store.write(data, progress=progress)
    del data
    return store.open()
