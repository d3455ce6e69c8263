"""The paper's Figs. 5-6: which points core-set picks in the task features, and with VAE features concatenated.

From a finished task run (paper: one round on 1,000 initial labels, i.e. ``--data.initial_labels=1000
--active.max_labels=1000``): take its labeled set and a random ``fraction`` of its unlabeled pool (paper: 5%),
embed both with the trained task model T_f(u) and with the VAE's posterior mean V(u), select ``select`` points
(paper: 100) with k-center greedy on ``T_f(u)`` and on ``[T_f(u), alpha * V(u)]`` (eq. 6), and draw a t-SNE of
each feature space side by side: labeled, unlabeled and selected points.

Why a finished run: the active-learning loop resets the weights to their round-0 state after every acquisition,
so only the checkpoint written after the last round (whose loop state says ``finished``) holds a model trained
on its labeled set. In a multi-round run that is the final round's model and its final labeled set.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from lightning import Trainer
from matplotlib.figure import Figure
from torch import Tensor

from alvae_pl.acquisition.coreset import k_center_greedy
from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.analysis.curves import figure_to_tensorboard
from alvae_pl.analysis.tsne_figure import (
    ROLE_LABELED,
    ROLE_SELECTED,
    ROLE_UNLABELED,
    make_panel,
    plot_selection_panels,
    roles_from_indices,
)
from alvae_pl.atomic_files import write_csv
from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.models.encoder_checkpoint import features_from_checkpoint
from alvae_pl.models.task_model import TaskModel

#: Callback state key prefix of the active-learning loop in a Lightning checkpoint.
LOOP_STATE_KEY = "ActiveLearningLoop"
#: DataModule state key in a Lightning checkpoint (the class name).
DATAMODULE_STATE_KEY = "ActiveDataModule"
# Trainer.fit's parameters that are not config keys: everything else (ckpt_path...) is dropped from config.yaml.
_FIT_INPUTS = {"self", "model", "train_dataloaders", "val_dataloaders", "datamodule"}


@dataclass(frozen=True)
class SelectionComparison:
    """Both selections and their picture. Indices are pool positions.

    Attributes:
        labeled: int64 ``[L]``, the run's labeled set.
        candidates: int64 ``[n]``, the random share of the unlabeled pool selected from.
        num_unlabeled: size of the whole unlabeled pool.
        task_selected: int64 ``[select]``, k-center greedy picks on the task features.
        combined_selected: int64 ``[select]``, picks on ``[task, alpha * VAE]`` features.
        figure: the two t-SNE panels side by side.
        path: the PNG written.
    """

    labeled: np.ndarray
    candidates: np.ndarray
    num_unlabeled: int
    task_selected: np.ndarray
    combined_selected: np.ndarray
    figure: Figure
    path: Path


def _load_checkpoint(path: Path) -> dict[str, Any]:
    # weights_only=False: the checkpoint holds the loop's history (plain dicts) and hyper-parameters; it is the
    # user's own run, written by this program.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint; pass a run folder written by train.py")
    return checkpoint


def _loop_state(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.split("{")[0] == LOOP_STATE_KEY:
            return state
    raise ValueError(f"{path} holds no active-learning loop state; pass the run folder of a task run")


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
    config_path, checkpoint_path = run / "config.yaml", run / "checkpoints" / "last.ckpt"
    for path in (config_path, checkpoint_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; pass the folder of a finished train.py run")
    checkpoint = _load_checkpoint(checkpoint_path)
    loop = _loop_state(checkpoint, checkpoint_path)
    if not loop.get("finished", False):
        history = loop.get("history") or []
        raise ValueError(
            f"the run in {run} is not finished ({len(history)} round(s) recorded): its checkpoint holds weights reset "
            "for the next round. Finish it (`--ckpt_path=last`) or train a single round, e.g. "
            "--data.initial_labels=1000 --active.max_labels=1000"
        )
    if DATAMODULE_STATE_KEY not in checkpoint:
        raise ValueError(f"{checkpoint_path} lacks the pool state {DATAMODULE_STATE_KEY!r}; pass a train.py run")

    from alvae_pl.cli import main

    with warnings.catch_warnings():
        # LightningCLI warns when given args while sys.argv has some too: here they are experiment.py's own.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = main(["--config", yaml.safe_dump(runnable_config(config_path))], run=False)
    model, datamodule = cli.model, cli.datamodule
    if not isinstance(model, TaskModel):
        raise ValueError(f"{run} is a {type(model).__name__} run; pass the folder of a task-model run")
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    datamodule.load_state_dict(checkpoint[DATAMODULE_STATE_KEY])
    return model, datamodule


@torch.no_grad()
def embed(
    model: TaskModel, space: FeatureSpace, datamodule: ActiveDataModule, positions: Tensor, device: torch.device
) -> dict[str, Tensor]:
    """``space``'s features of pool ``positions`` ``[n]`` (``{"task": [n, 512], "vae": [n, latent]}`` for a space
    with VAE features), on the CPU."""
    outputs: dict[str, list[Tensor]] = {}
    for start in range(0, len(positions), datamodule.eval_batch_size):
        images = datamodule.pool_images(positions[start : start + datamodule.eval_batch_size]).to(device)
        for key, value in space.embed(model, images).items():
            outputs.setdefault(key, []).append(value.cpu())
    return {key: torch.cat(parts) for key, parts in outputs.items()}


def compare_selections(
    run: str | Path,
    vae_checkpoint: str | Path,
    *,
    fraction: float = 0.05,
    select: int = 100,
    alpha: float = 1.0,
    normalize: bool = False,
    seed: int = 0,
    out: str | Path | None = None,
    tensorboard: bool = True,
    num_threads: int | None = None,
) -> SelectionComparison:
    """Core-set on task features vs on ``[task, alpha * VAE]`` features, from one finished run (Figs. 5-6).

    Args:
        run: folder of a finished task run (see the module docstring).
        vae_checkpoint: a VAE (``configs/vae_<data>.yaml``) or contrastive encoder
            (``configs/contrastive_<data>.yaml``) trained on the same data.
        fraction: share of the unlabeled pool drawn at random to select from (paper: 0.05).
        select: points each selection picks (paper: 100).
        alpha: weight of the VAE block (eq. 6).
        normalize: scale each block to unit mean norm before alpha (``EncoderFeatures(normalize=True)``).
        seed: seeds the random share and t-SNE.
        out: the PNG; default ``<run>/tsne_selection.png``. A CSV of the points and their roles goes beside it
            (same name, ``.csv``).
        tensorboard: also log the figure (tag ``tsne/selection``) to a SummaryWriter in the PNG's folder.
        num_threads: OpenMP threads of t-SNE (None: the library default).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {fraction}")
    if select < 1:
        raise ValueError(f"--select must be at least 1, got {select}")
    run = Path(run)
    out = Path(out) if out is not None else run / "tsne_selection.png"
    model, datamodule = load_finished_run(run)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    vae = features_from_checkpoint(vae_checkpoint, alpha=alpha, normalize=normalize)
    spaces = {
        "task features": FeatureSpace(),
        f"[task, {alpha:g} \u00d7 VAE] features{' (normalized)' if normalize else ''}": FeatureSpace(vae),
    }
    for space in spaces.values():
        space.setup(datamodule.data, device)

    pool = datamodule.pool
    unlabeled = pool.unlabeled
    count = round(fraction * len(unlabeled))
    if count < select:
        raise ValueError(
            f"--fraction {fraction} of the {len(unlabeled)} unlabeled images gives {count} candidates, fewer than "
            f"--select {select}; raise --fraction or lower --select"
        )
    generator = torch.Generator().manual_seed(seed)
    candidates = unlabeled[torch.randperm(len(unlabeled), generator=generator)[:count]].sort().values
    labeled = pool.labeled
    # Embedded once in the joint space; the task-only space reads the task block of the same outputs.
    joint = list(spaces.values())[-1]
    candidate_features = embed(model, joint, datamodule, candidates, device)
    labeled_features = embed(model, joint, datamodule, labeled, device)
    points = torch.cat([labeled, candidates]).numpy()
    panels, picks = [], []
    for title, space in spaces.items():
        candidate_points, labeled_points = space.combine(candidate_features, labeled_features)
        selection = k_center_greedy(candidate_points, labeled_points, select, torch.Generator().manual_seed(seed))
        picks.append(candidates[selection.positions].numpy())
        # Rows: labeled set first, then the candidates; the selected rows are candidates.
        roles = roles_from_indices(len(points), np.arange(len(labeled)), len(labeled) + selection.positions.numpy())
        features = torch.cat([labeled_points, candidate_points]).cpu().numpy()
        panels.append(make_panel(features, roles, f"core-set on {title}", seed, num_threads))
    figure = plot_selection_panels(
        panels,
        out,
        title=f"{run.parent.name}/{run.name}: {len(labeled)} labeled, {select} selected from {count} random unlabeled",
    )
    write_points_csv(out.with_suffix(".csv"), datamodule, labeled, candidates, picks)
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(out.parent)) as writer:
            figure_to_tensorboard(figure, writer, "tsne/selection")
    return SelectionComparison(labeled.numpy(), candidates.numpy(), len(unlabeled), picks[0], picks[1], figure, out)


def write_points_csv(
    path: Path, datamodule: ActiveDataModule, labeled: Tensor, candidates: Tensor, picks: list[np.ndarray]
) -> Path:
    """One row per point drawn: pool and train-split index, and its role in each panel (task, task + VAE)."""
    labeled_set = set(labeled.tolist())
    chosen = [set(p.tolist()) for p in picks]
    rows = []
    for position in torch.cat([labeled, candidates]).tolist():
        roles = [
            ROLE_LABELED if position in labeled_set else ROLE_SELECTED if position in picked else ROLE_UNLABELED
            for picked in chosen
        ]
        rows.append([position, int(datamodule.pool.dataset_indices[position]), *roles])
    header = ("pool_index", "dataset_index", "role_task_features", "role_task_vae_features")
    return write_csv(path, header, rows)
