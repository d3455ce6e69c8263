"""A run's folder, in one place: the files a run writes there and where to find its state in its checkpoint.

One ``train.py fit`` run writes into ``<save_dir>/<name>/<version>/`` (its logger's folder)::

    config.yaml              the resolved configuration (RunConfigRecord); the run's identity on resume
    history.csv              one row per round: labels, epochs, metrics, stopping measures, timings (the loop)
    labeled.csv              every labeled image: round, pool index, file, score, label, origin (the loop)
    run_status.json          training | waiting_for_labels | finished (alvae_pl.run_status)
    checkpoints/last.ckpt    the one checkpoint, replaced atomically (RunCheckpoint)
    round_model.pt           the weights that chose a waiting run's open query (alvae_pl.round_model)
    query_round_<r>.csv      a human oracle's open query, its contact sheet and answers (alvae_pl.oracles)
    corrections.csv          an expert's corrections of earlier labels, written by the expert only (alvae_pl.oracles)
    predictions.csv          ``train.py predict`` (alvae_pl.predictions)
    train.log                the run's output, when the experiment runner started it
    events.out.tfevents.*    TensorBoard curves, ``al/*`` against the number of labels
    run.lock                 held while a process works in the folder (alvae_pl.run_lock)

Reading a finished run back (its model and pool) is :mod:`alvae_pl.finished_run`. This module imports no torch, so
that listing an experiment's jobs stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONFIG_FILENAME = "config.yaml"
HISTORY_FILENAME = "history.csv"
LABELED_FILENAME = "labeled.csv"
RUN_STATUS_FILENAME = "run_status.json"
#: Where ``RunCheckpoint`` writes by default (its ``dirpath`` may put it elsewhere).
CHECKPOINT_PATH = "checkpoints/last.ckpt"
ROUND_MODEL_FILENAME = "round_model.pt"
PREDICTIONS_FILENAME = "predictions.csv"
LOG_FILENAME = "train.log"
LOCK_FILENAME = "run.lock"
#: What a run leaves once its first round ended: a fresh run refuses a folder that holds any of them, and the
#: experiment runner continues such a run with ``--ckpt_path=last``.
RUN_RECORDS = (HISTORY_FILENAME, LABELED_FILENAME, CHECKPOINT_PATH)

#: Callback state key of the active-learning loop in a Lightning checkpoint (the class name).
LOOP_STATE_KEY = "ActiveLearningLoop"
#: DataModule state key in a Lightning checkpoint (the class name).
DATAMODULE_STATE_KEY = "ActiveDataModule"


def records_in(folder: Path) -> list[str]:
    """The :data:`RUN_RECORDS` that ``folder`` holds (empty: no run has ended a round there)."""
    return [name for name in RUN_RECORDS if (folder / name).exists()]


def loop_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The active-learning loop's state in a loaded checkpoint (round, history, scores, open query...); empty for a
    run without rounds. Lightning keys a callback's state by its class name, with its arguments in braces when it
    defines ``state_key`` otherwise."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if key.split("{")[0] == LOOP_STATE_KEY:
            return state or {}
    return {}
