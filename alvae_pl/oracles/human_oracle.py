"""A person as the oracle: each round's picks go out as a CSV and a contact sheet, the answers come back."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from alvae_pl.atomic_files import write_csv
from alvae_pl.data.label_table import FILE_COLUMN, LABEL_COLUMN, read_label_rows
from alvae_pl.oracles.answer_check import QUERY_INFO_COLUMNS, answered_part, check_answers
from alvae_pl.oracles.contact_sheet import write_contact_sheets
from alvae_pl.oracles.oracle import Answers, Oracle, Query

if TYPE_CHECKING:
    from alvae_pl.data.datamodule import ActiveDataModule


def query_path(run_folder: Path, round_index: int) -> Path:
    """``<run folder>/query_round_<r>.csv``: the images to label for round ``r``."""
    return run_folder / f"query_round_{round_index}.csv"


class HumanOracle(Oracle):
    """Asks an expert: at the end of a round the run writes the batch to label and stops; run again to go on.

    At the end of round ``r - 1`` the run writes, in its folder:

    - ``query_round_<r>.csv``: one row per picked image, in picking order: ``rank``, ``pool_index``, ``file``,
      ``score``, and empty label cells (``label`` for multi-class, one 0/1 column per finding for multi-label);
    - ``query_round_<r>.png``: the images in the same order, each captioned with its rank and its full file name
      (one sheet per 100 images: ``query_round_<r>_<k>.png``);

    checkpoints, and stops with a one-line message saying which file to fill in and which command continues.
    Running that command (the same one with ``--ckpt_path last``) reads the answers, checks them (every
    asked image answered once, known class names, 0/1 findings, no image that was not asked), labels them and
    trains round ``r``. A mistake gets a one-line error naming the line; nothing is labeled or written then, and
    the run stays where it was. Files already written are never rewritten.

    Needs images read from files (:class:`~alvae_pl.data.sources.FolderSource`).

    Args:
        answers: read the answers from this CSV (``file`` plus the label columns, as in the labels file)
            instead of the query file; ``python train.py fit ... --labels path.csv`` sets it.
        partial: what to do when some asked images have no answer yet: ``wait`` (stop again, labeling
            nothing) or ``use`` (label the answered ones; the others go back to the unlabeled pool, and the next
            acquisition tops the labeled set up to the schedule).
        images_per_sheet: tiles per contact-sheet PNG.

    An earlier answer is corrected in the run folder's ``corrections.csv`` (:mod:`alvae_pl.oracles.corrections`),
    read when the run continues; an answered query file is not read again (an edit there gets a warning).
    """

    takes_corrections = True

    def __init__(
        self, answers: str | None = None, partial: Literal["wait", "use"] = "wait", images_per_sheet: int = 100
    ) -> None:
        if partial not in ("wait", "use"):
            raise ValueError(f"active.oracle.partial must be wait or use, got {partial!r}")
        if images_per_sheet < 1:
            raise ValueError(f"active.oracle.images_per_sheet must be at least 1, got {images_per_sheet}")
        self.answers = answers
        self.partial = partial
        self.images_per_sheet = images_per_sheet

    def check(self, datamodule: ActiveDataModule) -> None:
        if datamodule.pool_files is None:
            raise ValueError(
                "active.oracle HumanOracle shows the expert image files: use data.source "
                "alvae_pl.data.sources.FolderSource (a folder of images and a labels CSV)"
            )

    def answer(self, query: Query, datamodule: ActiveDataModule, run_folder: Path) -> Answers | str:
        files = datamodule.pool_files
        asked = [files[p] for p in query.positions.tolist()]
        path = query_path(run_folder, query.round_index)
        data = datamodule.data
        # A query file written just now holds no answers; one written earlier may (the expert fills it in place).
        if self._write_query(path, query, asked, datamodule):
            return self._waiting(query, path, path, len(asked), len(asked), data.task)
        source = Path(self.answers).expanduser() if self.answers is not None else path
        answered = check_answers(read_label_rows(source), asked, query, datamodule)
        missing = [name for name in asked if name not in answered]
        if not answered or (missing and self.partial == "wait"):
            return self._waiting(query, path, source, len(missing), len(asked), data.task)
        return answered_part(query, asked, answered)

    def _waiting(self, query: Query, path: Path, source: Path, missing: int, asked: int, task: str) -> str:
        """The one line a paused run ends with: what to fill in, where to look, what to run."""
        where = f"the {_label_cells(task)} of {path}" if source == path else f"{source}"
        return (
            f"Round {query.round_index} waits for labels: {missing} of {asked} images (contact sheet "
            f"{_sheet_name(path, asked, self.images_per_sheet)}) have none yet. Fill in {where} (or write the "
            f"answers to a CSV and add --labels it.csv), then continue with: {continue_command()}"
        )

    def _write_query(self, path: Path, query: Query, asked: list[str], datamodule: ActiveDataModule) -> bool:
        """The query CSV and its contact sheets, once: a file that exists may hold the expert's answers.

        Returns:
            Whether the query CSV was written now (``False``: it existed).
        """
        data = datamodule.data
        labels = [LABEL_COLUMN] if data.task == "multiclass" else list(data.class_names)
        fresh = not path.exists()
        if fresh:
            rows = [
                [rank, position, name, score, *[""] * len(labels)]
                for rank, (position, name, score) in enumerate(
                    zip(query.positions.tolist(), asked, query.scores.tolist(), strict=True), start=1
                )
            ]
            header = [*QUERY_INFO_COLUMNS[:2], FILE_COLUMN, QUERY_INFO_COLUMNS[2], *labels]
            write_csv(path, header, rows, float_format=lambda value: f"{value:.6g}")
        write_contact_sheets(
            datamodule.pool_images(query.positions).cpu(),
            asked,
            path.with_suffix(""),
            per_sheet=self.images_per_sheet,
        )
        return fresh


def _label_cells(task: str) -> str:
    return "label column" if task == "multiclass" else "finding columns (1 present, 0 absent)"


def _sheet_name(path: Path, count: int, per_sheet: int) -> str:
    return path.with_suffix(".png").name if count <= per_sheet else f"{path.stem}_*.png"


def continue_command() -> str:
    """The command that continues this run: the one that started it, less ``--labels`` (its answers are used),
    with ``--ckpt_path last``."""
    arguments = sys.argv[1:]
    if not sys.argv or not sys.argv[0].endswith("train.py"):
        return "python train.py fit --config <your config> --ckpt_path last"
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
            continue
        if argument in ("--ckpt_path", "--labels"):
            skip = True
            continue
        if argument.startswith(("--ckpt_path=", "--labels=")):
            continue
        kept.append(argument)
    return shlex.join(["python", sys.argv[0], *kept, "--ckpt_path", "last"])
