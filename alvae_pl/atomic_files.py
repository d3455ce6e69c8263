"""Files written whole or not at all: every record, table and figure this package writes goes through here."""

from __future__ import annotations

import csv
import errno
import glob
import io
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Have ``write`` fill a temporary file in ``path``'s own folder, flush it to disk, then rename it over ``path``:
    a reader, or a run killed at any moment (or a full disk), never sees half a file, and the previous ``path``
    stays whole until the rename.

    The temporary file lies beside the target, never in the system's temporary directory: a rename is atomic only
    within one filesystem, and across two (a tmpfs ``/tmp``, runs on NFS or Lustre) a "move" is a copy that
    truncates the old file first. A failed write removes its temporary file; a killed one leaves a hidden
    ``.<name>.*.tmp`` beside the target, which the next write of the same file removes.

    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask), not
    ``mkstemp``'s private ``0o600``: records and reports are meant to be read by colleagues on a shared machine.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(descriptor, 0o666 & ~umask)
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise DiskFullError(path) from error
        raise
    _fsync_folder(path.parent)
    return path


class DiskFullError(OSError):
    """A write that found no space left: names the file, and says that the previous version is intact."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            errno.ENOSPC,
            f"no space left on the device of {path} (its previous version, if any, is intact): free some space, "
            "then run the same command again (a run: add --ckpt_path last)",
        )
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


def _fsync_folder(folder: Path) -> None:
    """Flush the folder's entry for a renamed file, so that the rename itself survives a power cut."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders: the rename is then as durable as they make it
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``atomic_write`` of ``data``."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``atomic_write_bytes`` for UTF-8 text, newlines written as given."""
    return atomic_write_bytes(path, text.encode())


def full_precision(value: float) -> str:
    """The shortest text that reads back as the same float."""
    return repr(float(value))


def csv_text(
    header: Sequence[str], rows: Iterable[Sequence[object]], float_format: Callable[[float], str] = full_precision
) -> str:
    """CSV text (``\\n`` line ends, quoting as the ``csv`` module does) with ``None`` and NaN written as empty cells,
    and floats (numpy's included) through ``float_format``."""

    def cell(value: object) -> object:
        if value is None:
            return ""
        if isinstance(value, float | np.floating):
            return "" if math.isnan(float(value)) else float_format(float(value))
        return value

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([cell(value) for value in row] for row in rows)
    return buffer.getvalue()


def write_csv(
    path: str | Path,
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    float_format: Callable[[float], str] = full_precision,
) -> Path:
    """``csv_text`` written atomically to ``path``."""
    return atomic_write_text(path, csv_text(header, rows, float_format))
