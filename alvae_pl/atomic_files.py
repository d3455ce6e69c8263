"""Files written whole or not at all: every record, table and figure this package writes goes through here."""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, flushed to disk, then renamed over
    ``path``: a reader, or a run killed at any moment, never sees half a file.

    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask), not
    ``mkstemp``'s private ``0o600``: records and reports are meant to be read by colleagues on a shared machine.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(descriptor, 0o666 & ~umask)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


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
