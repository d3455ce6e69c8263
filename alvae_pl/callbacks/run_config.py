"""The run's configuration, recorded once per distinct invocation and never rewritten."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback

from alvae_pl.atomic_files import atomic_write_text


class RunConfigRecord(SaveConfigCallback):
    """Writes the resolved configuration to ``config.yaml`` in the run folder, without ever rewriting a record.

    A run is often started by one command and continued by others (``--ckpt_path last`` after a crash, an expert's
    answers with ``--labels``). Lightning's ``SaveConfigCallback`` either refuses the second command or overwrites
    the first one's file. This keeps ``config.yaml`` as the first invocation wrote it; a continuation with the same
    configuration writes nothing, and one with other settings writes ``config_2.yaml``, ``config_3.yaml``, ...

    Hooks: ``setup`` (every rank reads the run folder, a collective under DDP; rank zero writes).
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        folder = Path(trainer.log_dir if trainer.log_dir is not None else trainer.default_root_dir)
        if trainer.is_global_zero:
            text = self.parser.dump(self.config, skip_none=False)
            first = folder / self.config_filename
            path, number = first, 1
            while path.exists() and path.read_text() != text:
                number += 1
                path = first.with_name(f"{first.stem}_{number}{first.suffix}")
            if not path.exists():
                atomic_write_text(path, text)
            self.save_config(trainer, pl_module, stage)
        self.already_saved = True
