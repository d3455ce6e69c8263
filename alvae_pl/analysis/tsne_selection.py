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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
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
from alvae_pl.finished_run import load_finished_run
from alvae_pl.models.encoder_checkpoint import features_from_checkpoint
from alvae_pl.models.task_model import TaskModel


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
