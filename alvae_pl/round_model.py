"""``round_model.pt``: the task model of a round that waits for an expert's labels, kept for predictions.

At the end of every round the loop resets the task model to its round-0 weights before ``last.ckpt`` is written
(each round trains from the same start), so a run waiting for labels has lost the weights that chose its open query.
The loop saves them here first; ``python train.py predict`` reads them. A finished run needs no such file: its last
round is never reset, and ``last.ckpt`` holds the trained weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from alvae_pl.atomic_files import atomic_write
from alvae_pl.run_folder import ROUND_MODEL_FILENAME


def round_model_path(run_folder: str | Path) -> Path:
    """``<run folder>/round_model.pt``."""
    return Path(run_folder) / ROUND_MODEL_FILENAME


def save_round_model(run_folder: str | Path, model: nn.Module, round_index: int, labels: int) -> Path:
    """Write ``model``'s weights (trained in round ``round_index`` on ``labels`` labels) atomically.

    A resumed run that repeats the round's last epoch rewrites the same weights, so the file needs no place in the
    checkpoint.
    """
    state = {
        "round": round_index,
        "labels": labels,
        "state_dict": {name: value.detach().cpu().clone() for name, value in model.state_dict().items()},
    }
    return atomic_write(round_model_path(run_folder), lambda handle: torch.save(state, handle))


def load_round_model(run_folder: str | Path) -> dict[str, Any] | None:
    """``{"round", "labels", "state_dict"}`` as saved, or ``None`` when the run has saved none."""
    path = round_model_path(run_folder)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
