"""Where a run stands, said explicitly: ``run_status.json`` in its folder, written by the run, read by the runner.

The experiment runner decides from it whether a run is finished (skip it), interrupted (resume it) or new
(start it), instead of inferring that from the history's columns or a checkpoint's internals. Imports no torch,
so that listing an experiment's jobs stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

from alvae_pl.atomic_files import atomic_write_text
from alvae_pl.run_folder import RUN_STATUS_FILENAME

RUN_STATUS_FILE = RUN_STATUS_FILENAME
#: ``training``: rounds remain (a run killed in this state resumes); ``waiting_for_labels``: an expert's answers
#: are due (a human oracle's open query); ``finished``: the last round (or the last epoch of a run without rounds,
#: the VAE) is done.
RunStatus = Literal["training", "waiting_for_labels", "finished"]


def write_run_status(folder: str | Path, status: RunStatus, **details: Any) -> Path:
    """Rewrites ``<folder>/run_status.json`` whole: ``{"status": ..., **details}`` (plain JSON values)."""
    if status not in get_args(RunStatus):
        raise ValueError(f"unknown run status {status!r}; one of {get_args(RunStatus)}")
    return atomic_write_text(Path(folder) / RUN_STATUS_FILE, json.dumps({"status": status, **details}, indent=1) + "\n")


def read_run_status(folder: str | Path) -> RunStatus | None:
    """The status a run folder records, or ``None`` when it records none (not started, or killed before its first
    round ended) or the file is unreadable."""
    path = Path(folder) / RUN_STATUS_FILE
    try:
        status = json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return status if status in get_args(RunStatus) else None
