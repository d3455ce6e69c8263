"""The run's configuration, recorded once per distinct invocation and never rewritten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback

from alvae_pl.atomic_files import atomic_write_text

#: Options that say how a command was started, not what it runs: two dumps that differ only here are one config.
INVOCATION_ONLY = ("ckpt_path",)


def same_configuration(first: str, second: str) -> bool:
    """Whether two dumped configurations differ at most in :data:`INVOCATION_ONLY` options."""

    def settings(text: str) -> dict[str, Any]:
        loaded = yaml.safe_load(text) or {}
        return {key: value for key, value in loaded.items() if key not in INVOCATION_ONLY}

    return settings(first) == settings(second)


class RunConfigRecord(SaveConfigCallback):
    """Writes the resolved configuration to ``config.yaml`` in the run folder, without ever rewriting a record.

    A run is often started by one command and continued by others (``--ckpt_path last`` after a crash, an expert's
    answers with ``--labels``). Lightning's ``SaveConfigCallback`` either refuses the second command or overwrites
    the first one's file. This keeps ``config.yaml`` as the first invocation wrote it; a continuation with the same
    configuration (up to ``--ckpt_path``) writes nothing, and one with other settings writes ``config_2.yaml``,
    ``config_3.yaml``, ...

    The configuration is also part of the checkpoint (``state_dict``), where ``train.py`` compares it with the
    command that continues the run (:mod:`alvae_pl.run_identity`).

    Hooks: ``on_train_start``, once the checkpoint is restored and the run's checks have passed, so that a refused
    run leaves no record of its settings (every rank reads the run folder, a collective under DDP; rank zero
    writes).
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Nothing yet: see ``on_train_start``."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.already_saved:
            return
        folder = Path(trainer.log_dir if trainer.log_dir is not None else trainer.default_root_dir)
        if trainer.is_global_zero:
            text = self.config_text()
            first = folder / self.config_filename
            path, number = first, 1
            while path.exists() and not same_configuration(path.read_text(), text):
                number += 1
                path = first.with_name(f"{first.stem}_{number}{first.suffix}")
            if not path.exists():
                atomic_write_text(path, text)
            self.save_config(trainer, pl_module, "fit")
        self.already_saved = True

    def config_text(self) -> str:
        """The resolved configuration as YAML, as ``config.yaml`` holds it."""
        return self.parser.dump(self.config, skip_none=False)

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config_text()}
