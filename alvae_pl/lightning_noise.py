"""Lightning's lines that are untrue or idle for this tool, silenced for ``train.py`` and ``experiment.py``."""

from __future__ import annotations

import logging
import warnings

#: Warnings that say nothing a user of this tool can act on: the active-learning loop ends its run itself after
#: the last round (Lightning's default ``max_epochs`` only has to leave room for it), train metrics are logged once
#: per epoch (so no logging interval is too long), the pytree notice is Lightning's own deprecation, the modules
#: in eval mode at the start of training are the frozen VAE encoder that learning loss + VAE carries inside the
#: task model, on purpose, and a run folder's checkpoint folder is not empty whenever a run is continued (a second
#: run in the same folder is refused by ``train.py`` itself).
QUIET_WARNINGS = (
    r"`max_epochs` was not set",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"Checkpoint directory .* exists and is not empty",
)


#: Lines Lightning prints on every start that a user of this tool cannot act on: the seed (it is in config.yaml), which
#: accelerators exist and are unused (the run's own line says what it trains on), and the checkpoint restore (a
#: continued run says where it stands in its closing line).
IDLE_LINES = (
    "litlogger",
    "Seed set to",
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "Restoring states from the checkpoint path",
    "Restored all states from the checkpoint",
)


def _not_an_advertisement(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(line in message for line in IDLE_LINES)


def quiet_lightning() -> None:
    """Filter the warnings and the idle lines above; idempotent."""
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # rank_zero_info logs through the logger of whichever Lightning package imported lightning_utilities last.
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.fabric.utilities.seed",
    ):
        logger = logging.getLogger(name)
        if _not_an_advertisement not in logger.filters:
            logger.addFilter(_not_an_advertisement)
