"""The command line: LightningCLI with the active-learning loop as a first-class ``active:`` group."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from alvae_pl import acquisition
from alvae_pl.callbacks.active_learning_loop import ActiveLearningLoop
from alvae_pl.callbacks.progress_bar import ThrottledProgressBar
from alvae_pl.callbacks.run_checkpoint import RunCheckpoint
from alvae_pl.callbacks.run_config import RunConfigRecord
from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.lightning_noise import quiet_lightning
from alvae_pl.oracles import HumanOracle

#: Files whose presence means a run folder holds a run.
RUN_RECORDS = ("history.csv", "labeled.csv", "checkpoints/last.ckpt")


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
        """Refuse to mix a new run into a run folder that holds one: nothing already written may change."""
        labels = self.config[self.subcommand].get("labels")
        if labels is not None:
            loop = next(c for c in self.trainer.callbacks if isinstance(c, ActiveLearningLoop))
            if not isinstance(loop.oracle, HumanOracle):
                raise ValueError("--labels answers an expert's query: set active.oracle: alvae_pl.oracles.HumanOracle")
            loop.oracle.answers = labels
        if self.config[self.subcommand].get("ckpt_path") is not None:
            return  # resuming (or starting from) a checkpoint: the folder's records are rewritten from its state
        logger = self.trainer.logger
        folder = Path(logger.log_dir) if logger is not None and logger.log_dir is not None else None
        if folder is None:
            return
        found = [name for name in RUN_RECORDS if (folder / name).exists()]
        if found:
            raise FileExistsError(
                f"{folder} already holds a run ({', '.join(found)}): continue it with --ckpt_path last, or start a "
                "new one in another folder with --trainer.logger.init_args.version <name>"
            )

    def after_fit(self) -> None:
        """A run that waits for an expert's labels ends with the one line that says what to do next."""
        loop = next((c for c in self.trainer.callbacks if isinstance(c, ActiveLearningLoop)), None)
        if loop is not None and loop.pause_message is not None and self.trainer.is_global_zero:
            print(loop.pause_message, file=sys.stderr)

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


def main(args: list[str] | None = None, run: bool = True) -> AlvaeCLI:
    """Entry point; ``args`` lets tests drive the CLI in-process. Known bad input exits with one line."""
    quiet_lightning()
    try:
        return AlvaeCLI(**CLI_SETTINGS, args=args, run=run)
    except argparse.ArgumentError as error:
        print(f"error: {one_line_parse_error(str(error))}", file=sys.stderr)
        raise SystemExit(2) from None
    except (OSError, ValueError) as error:  # missing or unreadable files, failed downloads, bad settings
        if os.environ.get("ALVAE_DEBUG"):
            raise
        # jsonargparse wraps errors raised while computing linked arguments (``raise ... from original``): report
        # the original. Only explicit causes are followed: an error raised while handling another (a download
        # that failed offline, say) is the one that says what to do, not the socket error under it.
        while isinstance(error.__cause__, (OSError, ValueError)):
            error = error.__cause__
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
