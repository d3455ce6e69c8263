"""What ``train.py`` makes of a run's arguments, asked of its own parser rather than re-derived.

The runner needs a few facts about every run it launches: the run folder its logger writes, where its
``last.ckpt`` goes, which VAE checkpoints it reads, and that the seed, pool seed and folder it sets for every run
survive the experiment's overrides. :func:`parse_train_arguments` runs :class:`~alvae_pl.cli.AlvaeCLI` with the
very settings of ``train.py`` up to the point where it would build objects, so every default, link and merged
``--config`` is the CLI's; a renamed option fails when the experiment is read, not hours into a run.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from alvae_pl.callbacks.run_checkpoint import RunCheckpoint
from alvae_pl.cli import CLI_SETTINGS, AlvaeCLI, one_line_parse_error
from alvae_pl.models.encoder_features import EncoderFeatures


class _ParseOnlyCLI(AlvaeCLI):
    """``train.py fit``'s parser and its ``before_instantiate_classes``, without seeding, building or running."""

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass

    def _set_seed(self) -> None:
        pass  # seeding is for the run: the runner's process keeps its own random state


_PARSING_CLI: _ParseOnlyCLI | None = None


# Large enough for every variant of every shipped experiment (170 at the time of writing): reading them all twice, as
# the tests do, then parses each once.
@functools.lru_cache(maxsize=1024)
def parse_train_arguments(arguments: tuple[str, ...]) -> Namespace:
    """The configuration ``train.py fit <arguments>`` would run with (shared between calls: do not modify it).

    Raises:
        ValueError: the arguments do not parse; the message is train.py's one-line error.
        FileNotFoundError: a ``--config`` file is missing.
    """
    for position, argument in enumerate(arguments):
        if argument == "--config" and position + 1 < len(arguments) and not Path(arguments[position + 1]).is_file():
            raise FileNotFoundError(
                f"config {arguments[position + 1]} does not exist (paths start from the working directory)"
            )
    global _PARSING_CLI
    try:
        with warnings.catch_warnings():
            # LightningCLI warns when given args while sys.argv holds the runner's own command line: both are meant.
            warnings.filterwarnings("ignore", message=".*args parameter is intended")
            if _PARSING_CLI is None:
                _PARSING_CLI = _ParseOnlyCLI(**CLI_SETTINGS, args=["fit", *arguments])
            else:  # building the parser costs several times what parsing does: build it once
                _PARSING_CLI.parse_arguments(_PARSING_CLI.parser, ["fit", *arguments])
                _PARSING_CLI.before_instantiate_classes()
    except argparse.ArgumentError as error:
        raise ValueError(one_line_parse_error(str(error))) from None
    return _PARSING_CLI.config["fit"]


def config_arguments(configs: Sequence[str | Path]) -> list[str]:
    """``--config a.yaml --config b.yaml``: merged in order, as ``train.py`` does."""
    return [argument for config in configs for argument in ("--config", str(config))]


def run_folder(config: Namespace) -> Path:
    """The folder the run's logger writes (``<save_dir>/<name>/<version>``), asked of the logger class itself."""
    logger = config["trainer.logger"]
    if not isinstance(logger, Namespace) or "class_path" not in logger:
        raise ValueError("the run must log with a logger of fixed save_dir/name/version, e.g. TensorBoardLogger")
    settings = dict(logger.get("init_args") or {})
    if settings.get("version", "") is None:
        raise ValueError(
            "set trainer.logger.init_args.version (e.g. seed_0): with automatic versioning every run writes a new "
            "folder and its checkpoint cannot be found"
        )
    module, name = logger.class_path.rsplit(".", 1)
    instance = getattr(importlib.import_module(module), name)(**settings)  # builds no folder until it logs
    if getattr(instance, "log_dir", None) is None:
        raise ValueError(f"{logger.class_path} has no log_dir: log with a TensorBoardLogger or CSVLogger")
    return Path(instance.log_dir)


def last_checkpoint(config: Namespace) -> Path:
    """Where the run writes its ``last.ckpt`` (its ``checkpoint.dirpath``, by default under its run folder)."""
    return RunCheckpoint.last_path(run_folder(config), config["checkpoint.dirpath"])


def _class_specs(tree: Any) -> Iterator[Namespace]:
    """Every ``{class_path, init_args}`` setting inside a parsed configuration."""
    if isinstance(tree, Namespace):
        if isinstance(tree.get("class_path"), str):
            yield tree
        for value in vars(tree).values():
            yield from _class_specs(value)
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _class_specs(item)


def _is_vae_features(class_path: str) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, EncoderFeatures)


def vae_checkpoints(config: Namespace) -> list[Path]:
    """The checkpoints of the task-agnostic encoders a run reads: every :class:`EncoderFeatures` setting with one (a
    VAE's, a contrastive encoder's; the label-aware VAE, trained inside the run, and pretrained models have none)."""
    found = []
    for spec in _class_specs(config):
        checkpoint = (spec.get("init_args") or Namespace()).get("checkpoint")
        if checkpoint and _is_vae_features(spec.class_path):
            found.append(Path(checkpoint))
    return found
