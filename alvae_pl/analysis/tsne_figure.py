"""t-SNE pictures of a selection: labeled, unlabeled and newly selected points (the paper's Figs. 5-6).

Each panel is embedded on its own (the feature spaces differ: task features alone, or task features with
VAE features concatenated), then the panels are drawn side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from alvae_pl.analysis.curves import new_figure, save_png

ROLE_UNLABELED = "unlabeled"
ROLE_LABELED = "labeled"
ROLE_SELECTED = "selected"
ROLES: tuple[str, ...] = (ROLE_UNLABELED, ROLE_LABELED, ROLE_SELECTED)
# Drawing order is bottom to top: the few selected points must stay visible over the many unlabeled ones.
_STYLE: dict[str, dict[str, object]] = {
    ROLE_UNLABELED: {"color": "lightgrey", "s": 6, "zorder": 1},
    ROLE_LABELED: {"color": "tab:blue", "s": 12, "zorder": 2},
    ROLE_SELECTED: {"color": "tab:red", "s": 36, "zorder": 3, "edgecolors": "black", "linewidths": 0.4},
}


def embed_tsne(features: np.ndarray, seed: int, num_threads: int | None = None) -> np.ndarray:
    """Embed ``[N, D]`` features in 2-d with t-SNE (PCA initialisation, so the same seed gives the same map).

    Perplexity is ``min(30, (N - 1) / 3)`` so that small sets stay valid. ``num_threads`` caps the OpenMP
    threads of the gradient step (None: the library default). The result does not depend on it, but on a
    busy machine with few cores, 1 thread avoids OpenMP spin-waiting that can make t-SNE ten times slower.
    Returns float64 ``[N, 2]``.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be a [N, D] array, got shape {features.shape}")
    num_points, dim = features.shape
    if num_points < 2 or dim < 2:
        raise ValueError(f"t-SNE needs at least 2 points with at least 2 features each, got shape {features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError("features contain NaN or infinity; check the model that produced them")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be at least 1 (or None for the default), got {num_threads}")
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (num_points - 1) / 3.0))
    limit = nullcontext() if num_threads is None else threadpool_limits(limits=num_threads, user_api="openmp")
    with limit:
        coordinates = tsne.fit_transform(features)
    return np.asarray(coordinates, dtype=np.float64)


def roles_from_indices(
    num_points: int, labeled: Sequence[int] | np.ndarray, selected: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Role of each of ``num_points`` points (str ``[N]``): listed as labeled, selected, or else unlabeled."""
    labeled = np.asarray(labeled, dtype=np.int64).reshape(-1)
    selected = np.asarray(selected, dtype=np.int64).reshape(-1)
    for name, indices in (("labeled", labeled), ("selected", selected)):
        if len(indices) and (indices.min() < 0 or indices.max() >= num_points):
            raise ValueError(
                f"{name} indices must lie in [0, {num_points}), got range [{indices.min()}, {indices.max()}]"
            )
    overlap = np.intersect1d(labeled, selected)
    if len(overlap):
        raise ValueError(
            f"{len(overlap)} selected point(s) are already labeled (e.g. index {overlap[0]}); "
            "a heuristic must select from the unlabeled points"
        )
    roles = np.full(num_points, ROLE_UNLABELED, dtype=object)
    roles[labeled] = ROLE_LABELED
    roles[selected] = ROLE_SELECTED
    return roles.astype(str)


@dataclass(frozen=True)
class Panel:
    """One picture: 2-d ``coordinates`` ``[N, 2]`` and each point's role ``[N]`` (one of ``ROLES``)."""

    title: str
    coordinates: np.ndarray
    roles: np.ndarray

    def __post_init__(self) -> None:
        coordinates = np.asarray(self.coordinates)
        roles = np.asarray(self.roles).astype(str)
        if coordinates.ndim != 2 or coordinates.shape[1] != 2:
            raise ValueError(f"panel {self.title!r}: coordinates must be [N, 2], got shape {coordinates.shape}")
        if roles.shape != (coordinates.shape[0],):
            raise ValueError(f"panel {self.title!r}: roles must be [N] = [{coordinates.shape[0]}], got {roles.shape}")
        unknown = sorted(set(roles.tolist()) - set(ROLES))
        if unknown:
            raise ValueError(f"panel {self.title!r}: unknown role(s) {unknown}; use {list(ROLES)}")
        object.__setattr__(self, "coordinates", coordinates)
        object.__setattr__(self, "roles", roles)


def make_panel(features: np.ndarray, roles: np.ndarray, title: str, seed: int, num_threads: int | None = None) -> Panel:
    """Embed ``[N, D]`` features with :func:`embed_tsne` and pair them with their ``[N]`` roles."""
    roles = np.asarray(roles).astype(str)
    if roles.shape != (len(features),):
        raise ValueError(f"roles must be [N] = [{len(features)}], got shape {roles.shape}")
    return Panel(title=title, coordinates=embed_tsne(features, seed, num_threads), roles=roles)


def plot_selection_panels(
    panels: Sequence[Panel], path: str | Path | None = None, *, title: str | None = None
) -> Figure:
    """Draw the panels side by side: unlabeled light grey and small, labeled blue, selected red and larger.

    Args:
        panels: e.g. core-set on task features, and core-set on task + VAE features.
        path: where to save a PNG; nothing is saved when None.
        title: an overall title above the panels.

    Returns:
        The figure, one axes per panel; legends give the number of points in each role.
    """
    if not panels:
        raise ValueError("no panels to draw; build them with make_panel(features, roles, title, seed)")
    figure = new_figure(4.8 * len(panels), 4.8)
    grid = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, panel in zip(grid, panels, strict=True):
        for role in ROLES:
            mask = panel.roles == role
            if np.any(mask):
                points = panel.coordinates[mask]
                axes.scatter(points[:, 0], points[:, 1], label=f"{role} ({int(mask.sum())})", **_STYLE[role])
        axes.set_title(panel.title)
        # t-SNE axes carry no units; ticks would suggest they do.
        axes.set_xticks([])
        axes.set_yticks([])
        axes.legend(loc="best", markerscale=1.5, fontsize="small")
    if title is not None:
        figure.suptitle(title)
    if path is not None:
        save_png(figure, path)
    return figure
