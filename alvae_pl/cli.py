"""The command line: LightningCLI with the active-learning loop as a first-class ``active:`` group."""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from alvae_pl import acquisition
from alvae_pl.atomic_files import DiskFullError
from alvae_pl.callbacks.active_learning_loop import ActiveLearningLoop, finished_line
from alvae_pl.callbacks.progress_bar import ThrottledProgressBar
from alvae_pl.callbacks.run_checkpoint import RunCheckpoint
from alvae_pl.callbacks.run_config import RunConfigRecord
from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.lightning_noise import quiet_lightning
from alvae_pl.oracles import HumanOracle
from alvae_pl.predictions import checkpoint_for, predict_run
from alvae_pl.run_folder import loop_state, records_in
from alvae_pl.run_identity import check_resume
from alvae_pl.run_lock import RunFolderBusy, RunLock

#: ``train.py``'s exit status when a run stopped to wait for an expert's labels (0: finished; 2: a one-line error;
#: 143: stopped by SIGTERM; 1: an unexpected error, with its traceback).
EXIT_WAITING_FOR_LABELS = 3
#: Files whose presence means a run folder holds a run.
#: The run folder locks this process holds; released by ``main`` however the run ends.
_HELD_LOCKS: list[RunLock] = []


def _is_launching_process() -> bool:
    """Whether this is the process that started the run (global rank zero), not one DDP launched beside it."""
    return all(int(os.environ.get(name, "0") or 0) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


class RunFinished(Exception):
    """A finished run was continued: its message is the closing line, and nothing is trained or written."""


def _integer_seed(seed: int | bool) -> int:
    if isinstance(seed, bool):
        raise ValueError("set an integer --seed_everything: runs must be reproducible and resumable")
    return int(seed)


class AlvaeCLI(LightningCLI):
    """``python train.py fit --config configs/<name>.yaml``.

    Adds two always-present groups: ``active`` (the :class:`ActiveLearningLoop`) and ``checkpoint`` (a
    :class:`RunCheckpoint` that writes ``last.ckpt`` after every epoch's acquisition, or every round's, in the
    run folder ``lightning_logs/<name>/<version>/checkpoints``, where ``--ckpt_path last`` finds it). Links what the
    data knows into the model (classes, channels, size, multi-class vs multi-label) and the one
    ``seed_everything`` into every seeded part, so configs never repeat either.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ActiveLearningLoop, "active")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_argument(
            "--labels",
            type=str | None,
            default=None,
            help="CSV with the expert's answers to the open query (file + label columns), read instead of the "
            "query file (active.oracle: HumanOracle)",
        )
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "lightning_logs", "name": "default", "version": "run"},
                },
            }
        )
        # Links whose target a model lacks (the VAE has no classes) are skipped by jsonargparse.
        for attribute in ("num_classes", "num_channels", "image_size", "task"):
            parser.link_arguments(
                "data", f"model.init_args.{attribute}", lambda d, a=attribute: getattr(d, a), apply_on="instantiate"
            )
        for target in ("data.seed", "model.init_args.init_seed", "active.seed"):
            parser.link_arguments("seed_everything", target, _integer_seed, apply_on="parse")

    def before_instantiate_classes(self) -> None:
        """Fill in the Trainer settings the active-learning loop needs where the user left them unset.

        A setting the user chose is never replaced: the loop checks the Trainer and refuses a conflicting one.
        """
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is None or config["data"]["train_on"] != "labeled":
            return
        trainer = config["trainer"]
        if trainer["reload_dataloaders_every_n_epochs"] == 0:  # Lightning's default: never rebuild
            trainer["reload_dataloaders_every_n_epochs"] = 1
        if not config["active"]["validate_every_epoch"]:
            for key in ("limit_val_batches", "num_sanity_val_steps"):
                if trainer[key] is None:
                    trainer[key] = 0

    def before_fit(self) -> None:
        """Before anything is written: take the run folder's lock, then refuse to mix a new run into a folder that
        holds one, and a resume into a run with other settings (nothing already written may change)."""
        config = self.config[self.subcommand]
        labels = config.get("labels")
        if labels is not None:
            loop = next(c for c in self.trainer.callbacks if isinstance(c, ActiveLearningLoop))
            if not isinstance(loop.oracle, HumanOracle):
                raise ValueError("--labels answers an expert's query: set active.oracle: alvae_pl.oracles.HumanOracle")
            loop.oracle.answers = labels
        logger = self.trainer.logger
        folder = Path(logger.log_dir) if logger is not None and logger.log_dir is not None else None
        if folder is None:
            return
        if _is_launching_process():  # DDP's other ranks run this too: one lock, held by the process that launched
            lock = RunLock(folder)
            lock.acquire()
            _HELD_LOCKS.append(lock)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            last = RunCheckpoint.last_path(folder, config["checkpoint"].get("dirpath"))
            if not last.is_file():
                # Nothing to continue (or a run killed before its first checkpoint, whose records a fresh start
                # rewrites to the same): start, without Lightning's warning that there is no checkpoint.
                self.config_init[self.subcommand]["ckpt_path"] = None
                return
            ckpt_path = str(last)
        if ckpt_path is None:
            found = records_in(folder)
            if found:
                raise FileExistsError(
                    f"{folder} already holds a run ({', '.join(found)}): continue it with --ckpt_path last, or start "
                    "a new one in another folder with --trainer.logger.init_args.version <name>"
                )
            return
        state = check_resume(Path(ckpt_path), folder, self._save_config_callback_text())
        loop = loop_state(state)
        if loop.get("finished") and loop.get("history"):
            # Nothing to train and nothing to write (not even a TensorBoard events file): say so and stop.
            raise RunFinished(finished_line(loop["history"], folder, True, loop.get("stop_reason")))

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.description = (
                "Write predictions.csv into the run folder: the run's current model on every pool image (and on "
                "--splits), with each image's label, its origin and the latest acquisition's score"
            )
            parser.add_argument(
                "--splits",
                type=list[Literal["pool", "val", "test"]],
                default=["pool"],
                help="which images predict writes rows for: [pool], or e.g. [pool,val,test]",
            )
        return parser

    def predict(self, model: LightningModule, datamodule: ActiveDataModule, ckpt_path: str | None = None, **_: Any):
        """``train.py predict --config <the run's config>``: writes ``predictions.csv`` into the run folder
        (:mod:`alvae_pl.predictions`) instead of Lightning's ``trainer.predict``. Holds the run folder's lock."""
        config = self.config[self.subcommand]
        logger = self.trainer.logger
        if logger is None or logger.log_dir is None:
            raise ValueError("predict finds the run by its logger: give the run's config (its trainer.logger)")
        folder = Path(logger.log_dir)
        checkpoint = checkpoint_for(folder, ckpt_path, config["checkpoint"].get("dirpath"))
        if not checkpoint.is_file():  # before the lock: a run folder that does not exist is not created
            raise FileNotFoundError(
                f"{checkpoint} not found: the run has not trained yet; start it with python train.py fit and the same "
                "config, then predict"
            )
        lock = RunLock(folder)
        lock.acquire()
        _HELD_LOCKS.append(lock)
        loop = self.loop
        _, summary = predict_run(
            self.trainer, model, datamodule, folder, checkpoint, config["splits"], cold_start=loop.start is not None
        )
        print(summary, file=sys.stderr)

    def _save_config_callback_text(self) -> str:
        record = next(c for c in self.trainer.callbacks if isinstance(c, RunConfigRecord))
        return record.config_text()

    def after_fit(self) -> None:
        """The run's closing line: finished (where its records are), finished earlier, or waiting for an expert's
        labels (what to do next)."""
        loop = self.loop
        line = loop.closing_line() if loop is not None else None
        if line is not None and self.trainer.is_global_zero:
            print(line, file=sys.stderr)

    @property
    def loop(self) -> ActiveLearningLoop | None:
        """The run's active-learning loop (``None`` before the Trainer exists)."""
        trainer = getattr(self, "trainer", None)
        return next((c for c in trainer.callbacks if isinstance(c, ActiveLearningLoop)), None) if trainer else None

    def exit_status(self) -> int:
        """``train.py``'s exit status once ``fit`` returned: :data:`EXIT_WAITING_FOR_LABELS` when the run stopped
        for an expert's answers, 0 otherwise (finished, or a run without rounds)."""
        loop = self.loop
        return EXIT_WAITING_FOR_LABELS if loop is not None and loop.pending is not None else 0

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Adds a :class:`ThrottledProgressBar` unless the bar is off or the user configured one."""
        configured = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in configured):
            callbacks = [*callbacks, ThrottledProgressBar()]
        return super()._instantiate_trainer(config, callbacks)


def one_line_parse_error(message: str) -> str:
    """jsonargparse's multi-line report of a bad option, as one line that says what to do."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    key = re.match(r'Parser key "([^"]+)"', lines[0]) if lines else None
    if key is None:
        return f"{lines[0] if lines else message} (python train.py fit --help lists every option)"
    same_line = lines[0][key.end() :].lstrip(": ").strip()
    if same_line and len(lines) == 1:  # e.g. "config": File does not exist: '...'
        return f"--{key.group(1)}: {same_line}"
    given = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith(("Given value:", "- Given value:"))), None
    )
    unknown_class = any("Expected a dot import path string" in line for line in lines)
    if key.group(1) == "active.heuristic" and unknown_class and given is not None:
        known = ", ".join(name for name in acquisition.__all__ if name not in ("Heuristic", "Selection"))
        return f"--active.heuristic: unknown heuristic {given!r}; known: {known} (or a full class path)"
    if unknown_class and given is not None:
        return f"--{key.group(1)}: no class named {given!r} (give a full class path, e.g. package.module.Class)"
    if "Errors:" in lines:  # a union (class or None): keep what the class said, drop the None alternative
        errors = lines[lines.index("Errors:") + 1 :]
        errors = [line.lstrip("- ") for line in errors if not line.startswith("Given value") and "NoneType" not in line]
        detail = " ".join(errors)
    else:
        detail = next((line.lstrip("- ") for line in lines[1:] if not line.startswith("Subtypes:")), "")
    return f"--{key.group(1)}: {detail}"


def yaml_problem(args: list[str]) -> str | None:
    """``<file>, line L, column C: <problem>`` for the first ``--config`` file of ``args`` that is not valid YAML."""
    files = [value for option, value in zip(args, args[1:], strict=False) if option == "--config"]
    files += [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    for file in files:
        try:
            yaml.safe_load(Path(file).read_text())
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            return f"{file}{where}: {error.problem or error.context} (not valid YAML: fix that line)"
        except (OSError, yaml.YAMLError):
            continue
    return None


#: How ``train.py`` builds its :class:`AlvaeCLI`; the experiment runner's parser (``alvae_pl.experiments``) is the
#: same one.
CLI_SETTINGS: dict[str, Any] = {
    "datamodule_class": ActiveDataModule,
    "subclass_mode_model": True,
    "seed_everything_default": 0,
    "save_config_callback": RunConfigRecord,
    # Parse errors come back as exceptions, reported in one line instead of usage + a type dump.
    "parser_kwargs": {"exit_on_error": False},
}


def main(args: list[str] | None = None, run: bool = True) -> AlvaeCLI | None:
    """Entry point; ``args`` lets tests drive the CLI in-process. Known bad input exits with one line. Returns the
    CLI, or ``None`` when a finished run was continued (its closing line printed, nothing done)."""
    quiet_lightning()
    failed = True
    try:
        cli = AlvaeCLI(**CLI_SETTINGS, args=args, run=run)
        failed = False
        return cli
    except RunFinished as finished:
        failed = False
        print(finished, file=sys.stderr)
        return None
    except SIGTERMException:  # Lightning stops the fit at the next batch and raises it (a SystemExit with status 0)
        print(
            "error: stopped by SIGTERM; continue the run with the same command and --ckpt_path last "
            "(its last checkpoint is intact)",
            file=sys.stderr,
        )
        raise SystemExit(128 + signal.SIGTERM) from None
    except argparse.ArgumentError as error:
        message = str(error)
        if message.startswith("Problems parsing config"):  # a YAML syntax error: jsonargparse names no file
            problem = yaml_problem(sys.argv[1:] if args is None else args)
            message = f"error: {problem}" if problem else f"error: {one_line_parse_error(message)}"
        else:
            message = f"error: {one_line_parse_error(message)}"
        print(message, file=sys.stderr)
        raise SystemExit(2) from None
    except (OSError, ValueError, RunFolderBusy) as error:  # missing or unreadable files, bad settings, a busy folder
        if os.environ.get("ALVAE_DEBUG"):
            raise
        # jsonargparse wraps errors raised while computing linked arguments (``raise ... from original``): report
        # the original. Only explicit causes are followed: an error raised while handling another (a download
        # that failed offline, say) is the one that says what to do, not the socket error under it.
        while isinstance(error.__cause__, (OSError, ValueError)):
            error = error.__cause__
        if isinstance(error, OSError) and error.errno == errno.ENOSPC and not isinstance(error, DiskFullError):
            where = f" writing {error.filename}" if error.filename else ""
            error = OSError(
                f"no space left on the device{where}: free some space, then run the same command again (a run: "
                "add --ckpt_path last; its last complete checkpoint is intact)"
            )
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        while _HELD_LOCKS:
            _HELD_LOCKS.pop().release(failed=failed)
