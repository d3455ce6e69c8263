"""Reading a run back: its model and pool, rebuilt from the run folder's ``config.yaml`` and ``last.ckpt``.

The t-SNE of selections (``experiment.py tsne``) and the feature-knowledge report (``experiment.py features``) read
finished runs through here; :mod:`alvae_pl.run_folder` says what a run folder holds.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning import Trainer
from lightning.pytorch.cli import LightningCLI

from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.models.task_model import TaskModel
from alvae_pl.run_folder import CHECKPOINT_PATH, CONFIG_FILENAME, DATAMODULE_STATE_KEY, loop_state

# Trainer.fit's parameters that are not config keys: everything else (ckpt_path...) is dropped from config.yaml.
_FIT_INPUTS = {"self", "model", "train_dataloaders", "val_dataloaders", "datamodule"}


def runnable_config(config_path: Path) -> dict[str, Any]:
    """A run's saved ``config.yaml``, ready to rebuild its model and data in this process: Trainer.fit's own
    arguments (``ckpt_path``...), which a parser without subcommands rejects, are dropped, and the trainer is one
    process's, without a logger (only the model and the data are wanted)."""
    config = yaml.safe_load(config_path.read_text())
    for name in inspect.signature(Trainer.fit).parameters:
        if name not in _FIT_INPUTS:
            config.pop(name, None)
    config.setdefault("trainer", {}).update(logger=False, devices=1, num_nodes=1, strategy="auto")
    return config


def rebuild_run(config_path: Path) -> LightningCLI:
    """The LightningCLI of a saved run's ``config.yaml``: its model and data instantiated, nothing run."""
    from alvae_pl.cli import main  # the command line imports what reads runs, not the other way round

    with warnings.catch_warnings():
        # LightningCLI warns when given args while sys.argv has some too: here they are experiment.py's own.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return main(["--config", yaml.safe_dump(runnable_config(config_path))], run=False)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A run's Lightning checkpoint, whole, on the CPU."""
    # weights_only=False: the checkpoint holds the loop's history (plain dicts) and hyper-parameters; it is the
    # user's own run, written by this program.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint; pass a run folder written by train.py")
    return checkpoint


def load_finished_run(run: str | Path) -> tuple[TaskModel, ActiveDataModule]:
    """The trained task model and the pool of a finished run, rebuilt from its ``config.yaml`` and ``last.ckpt``.

    Args:
        run: a run folder ``<save_dir>/<name>/<version>`` holding ``config.yaml`` and ``checkpoints/last.ckpt``.

    Returns:
        ``(model in eval mode on the CPU, datamodule with the run's labeled set)``.

    Raises:
        FileNotFoundError: the folder lacks either file.
        ValueError: not a task run, or the run is not finished (its weights would be the round-0 reset).
    """
    run = Path(run)
    config_path, checkpoint_path = run / CONFIG_FILENAME, run / CHECKPOINT_PATH
    for path in (config_path, checkpoint_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; pass the folder of a finished train.py run")
    checkpoint = load_checkpoint(checkpoint_path)
    loop = loop_state(checkpoint)
    if not loop:
        raise ValueError(f"{checkpoint_path} holds no active-learning loop state; pass the run folder of a task run")
    if not loop.get("finished", False):
        history = loop.get("history") or []
        raise ValueError(
            f"the run in {run} is not finished ({len(history)} round(s) recorded): its checkpoint holds weights reset "
            "for the next round. Finish it (`--ckpt_path=last`) or train a single round, e.g. "
            "--data.initial_labels=1000 --active.max_labels=1000"
        )
    if DATAMODULE_STATE_KEY not in checkpoint:
        raise ValueError(f"{checkpoint_path} lacks the pool state {DATAMODULE_STATE_KEY!r}; pass a train.py run")
    cli = rebuild_run(config_path)
    model, datamodule = cli.model, cli.datamodule
    if not isinstance(model, TaskModel):
        raise ValueError(f"{run} is a {type(model).__name__} run; pass the folder of a task-model run")
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    datamodule.load_state_dict(checkpoint[DATAMODULE_STATE_KEY])
    return model, datamodule
