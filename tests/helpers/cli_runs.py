"""Running ``train.py`` as a user does, in a subprocess, and reading what it leaves behind."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

REPOSITORY = Path(__file__).resolve().parents[2]
#: The tests' own small train.py configs.
TEST_CONFIGS = REPOSITORY / "tests" / "conf"

#: The tests' small profile (``tests/conf/tiny.yaml``): a ResNet-18 of base width 8 instead of 64.
TINY = ["--config", str(TEST_CONFIGS / "tiny.yaml")]

#: After ``TINY`` (in ``QUICK``): back to the real ResNet-18, for the few runs that assert what only it learns.
RESNET18 = ["--model.init_args.width=64"]

# Small enough for a 2-core CI machine, big enough to learn: 3 rounds of 60 -> 120 -> 180 labels, on the tiny profile.
QUICK = [
    *TINY,
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--checkpoint.min_interval=0",  # every epoch, so that the resume tests can kill at any epoch's checkpoint
    "--data.initial_labels=60",
    "--data.batch_size=30",
    "--active.budget=60",
    "--active.max_labels=180",
    "--active.epochs_first=2",
    "--active.epochs_increment=1",
]


#: Two rounds of 60 labels, one epoch each: the shortest run that makes one acquisition.
TWO_ROUNDS = [*QUICK, "--active.max_labels=120", "--active.epochs_first=1", "--active.epochs_increment=0"]


def first_acquisition(folder: Path, config: str, *arguments: str) -> tuple[list[dict[str, str]], list[float]]:
    """``train.py fit --config configs/<config> <arguments>`` for ``TWO_ROUNDS``, in this process, logging under
    ``folder``; returns the rows of ``labeled.csv`` and the scores of round one's picks, in picking order."""
    from alvae_pl.cli import main

    main(["fit", "--config", f"configs/{config}", f"--trainer.logger.init_args.save_dir={folder}", *TWO_ROUNDS,
          *arguments])  # fmt: skip
    labeled = read_csv(folder / Path(config).stem / "seed_0" / "labeled.csv")
    return labeled, [float(row["score"]) for row in labeled if row["round"] == "1"]


def train(config: str, folder: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python train.py fit --config configs/<config>`` with logs under ``folder``; returns the process."""
    command = [
        sys.executable,
        str(REPOSITORY / "train.py"),
        "fit",
        "--config",
        str(REPOSITORY / "configs" / config),
        f"--trainer.logger.init_args.save_dir={folder}",
        *QUICK,
        *extra,
    ]
    folder.mkdir(parents=True, exist_ok=True)
    # The repository first (its alvae_pl, and tests.helpers for the callbacks configs name by class path), then
    # whatever the caller's PYTHONPATH holds.
    paths = [str(REPOSITORY), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=timeout)


class InProcessResult(NamedTuple):
    """What a user sees of a ``train.py`` run: its exit status and what it wrote to stderr."""

    returncode: int
    stderr: str


def train_in_process(config: str, folder: Path, *extra: str) -> InProcessResult:
    """``train`` without a new interpreter (which costs ~10 s of imports on a 2-core machine): for the runs that
    stop with a one-line error, or train one short round. ``train.py``'s error lines are printed to ``sys.stderr``,
    which is captured here; an exception that escapes ``main`` fails the test as it would crash ``train.py``."""
    from alvae_pl.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    arguments = [
        "fit",
        "--config",
        str(REPOSITORY / "configs" / config),
        f"--trainer.logger.init_args.save_dir={folder}",
        *QUICK,
        *extra,
    ]
    stderr = io.StringIO()
    returncode = 0
    with contextlib.redirect_stderr(stderr):
        try:
            main(arguments)
        except SystemExit as exit_:
            returncode = int(exit_.code or 0)
    return InProcessResult(returncode, stderr.getvalue())


def kill_switch_config(init_args: str) -> str:
    """A config adding ``tests.helpers.kill_switch.KillSwitch`` with ``init_args`` (a YAML mapping) to the trainer's
    callbacks: write it to a file and pass ``--config <file>``."""
    return (
        "trainer:\n  callbacks:\n    - class_path: tests.helpers.kill_switch.KillSwitch\n"
        f"      init_args: {init_args}\n"
    )


def overlay(name: str) -> list[str]:
    """``--config configs/heuristics/<name>``: arguments that merge a heuristic overlay into a ``train`` run."""
    return ["--config", str(REPOSITORY / "configs" / "heuristics" / name)]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def without_timings(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in rows]
