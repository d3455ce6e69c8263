"""Before a continued run trains its next round: the expert's corrections (the run folder's ``corrections.csv``),
applied on every rank alike, and a one-line warning for edits the run does not read (an answered query file).

The files are read on rank zero; what they say, or the error, is broadcast, so that every rank trains on the same
labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.oracles.corrections import CORRECTIONS_FILENAME, edited_query_rows, read_corrections


def apply_corrections(trainer: L.Trainer, run_folder: Path, round_index: int, held_back: str | None = None) -> int:
    """Applies the corrections of ``run_folder/corrections.csv`` that change a label: the datamodule's targets (the
    next train loader serves them) and the pool's record (origin ``correction in round <round_index>``). A correction
    applied earlier repeats the label the run holds and changes nothing, so a resumed run never applies one twice.

    Args:
        trainer: the run's trainer (its datamodule is an :class:`ActiveDataModule`).
        run_folder: where ``corrections.csv`` and the query files are.
        round_index: the round about to train, the first to train on the corrections.
        held_back: why the corrections cannot take effect now (e.g. a run resumed in the middle of a round); then
            nothing is applied, and the labels the file would change get a one-line warning instead.

    Returns:
        How many labels changed.

    Raises:
        ValueError: on every rank, one line naming the row of a bad corrections file; nothing is changed.
    """
    datamodule: ActiveDataModule = trainer.datamodule
    path = run_folder / CORRECTIONS_FILENAME
    outcome: tuple[str, Any] | None = None
    if trainer.is_global_zero:
        try:
            outcome = ("corrections", read_corrections(path, datamodule) if path.is_file() else None)
        except (OSError, ValueError) as error:
            outcome = ("error", error)
    kind, value = trainer.strategy.broadcast(outcome, src=0)
    if kind == "error":
        if held_back is None:
            raise value
        rank_zero_warn(f"{value} (not applied now: {held_back})")
        return 0
    if value is None or len(value.positions) == 0:
        return 0
    count = len(value.positions)
    labels = f"{count} label{'s' if count > 1 else ''}"
    if held_back is not None:
        rank_zero_warn(f"{path}: corrections of {labels} are not applied now: {held_back}")
        return 0
    datamodule.correct(value.positions, value.targets)
    datamodule.pool.correct(value.positions, round_index)
    rank_zero_info(f"Corrected {labels} from {path}: round {round_index} trains on them")
    return count


def warn_of_edited_queries(trainer: L.Trainer, run_folder: Path, last_round: int) -> None:
    """One warning line per answered query file (``query_round_<r>.csv``, ``r <= last_round``) whose label cells now
    differ from the labels the run holds: the run does not read it again, the corrections file is the way (rank zero
    only; nothing changes)."""
    if not trainer.is_global_zero:
        return
    for query, rows in edited_query_rows(run_folder, trainer.datamodule, last_round):
        rank_zero_warn(
            f"{query} was answered already and is not read again, but {rows} of its rows now differ from the labels "
            f"the run holds: to change a label, write its file and new label to {run_folder / CORRECTIONS_FILENAME}"
        )
