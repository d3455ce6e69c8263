"""The private Lightning methods this project overrides still exist, are still called, and take what they took.

Lightning has no public hook for these (adding a progress bar unless the user configured one, parsing without
running or seeding, throttling the progress bar's redraws), so ``pyproject.toml`` caps ``lightning`` below the next
minor release. A version that renames or reshapes one of them fails here, by name, instead of silently skipping an
override.
"""

from __future__ import annotations

import inspect

import pytest
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import LightningCLI

from alvae_pl.callbacks.progress_bar import ThrottledProgressBar
from alvae_pl.cli import AlvaeCLI
from alvae_pl.experiments.train_config import _ParseOnlyCLI

#: (Lightning class, private method, its parameters after ``self``, the class of ours that overrides it).
OVERRIDDEN = [
    (LightningCLI, "_instantiate_trainer", ["config", "callbacks"], AlvaeCLI),
    (LightningCLI, "_run_subcommand", ["subcommand"], _ParseOnlyCLI),
    (LightningCLI, "_set_seed", [], _ParseOnlyCLI),
    (TQDMProgressBar, "_should_update", ["current", "total"], ThrottledProgressBar),
]


@pytest.mark.parametrize(("base", "name", "parameters", "ours"), OVERRIDDEN, ids=[row[1] for row in OVERRIDDEN])
def test_each_overridden_private_method_is_still_lightnings(base: type, name: str, parameters: list[str], ours: type):
    method = getattr(base, name, None)
    assert callable(method), f"{base.__name__}.{name} is gone: {ours.__name__} overrides it for nothing"
    assert list(inspect.signature(method).parameters)[1:] == parameters
    assert name in vars(ours)
    # Still called from where it was: its caller in Lightning names it.
    assert name in inspect.getsource(base).replace(f"def {name}", ""), f"{base.__name__} no longer calls {name}"
