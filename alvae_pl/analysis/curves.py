"""Learning curves: each variant's mean metric against the number of labels, with a 95% confidence band.

Figures are built with the object-oriented Agg canvas (``Figure`` + ``FigureCanvasAgg``) rather than
``matplotlib.use("Agg")``: it renders headless the same way and leaves the caller's global backend (e.g. a
notebook's) alone.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alvae_pl.analysis.history import Runs
from alvae_pl.analysis.statistics import summarize
from alvae_pl.atomic_files import atomic_write_bytes


def new_figure(width: float, height: float) -> Figure:
    """A figure drawn by the Agg canvas, independent of pyplot's state (nothing to close)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Save ``figure`` as a PNG at ``path`` atomically, with the permissions of any other file (see the writer)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def _metric_label(metric: str) -> str:
    return metric.replace("_", " ").replace("auroc", "AUROC")


#: Above this many variants, a plot widens, fades its bands and moves its legend beside the axes.
CROWDED = 4
#: Metric names (suffixes) whose values lie in [0, 1].
BOUNDED_METRICS = ("accuracy", "auroc")


def plot_curves(
    runs: Runs,
    metric: str,
    path: str | Path | None = None,
    *,
    title: str | None = None,
    level: float = 0.95,
) -> Figure:
    """Plot each variant's mean ``metric`` against the number of labeled images, with a shaded confidence band.

    Args:
        runs: ``{variant: {seed: History}}`` from :func:`~alvae_pl.analysis.history.load_experiment`.
        metric: a history column, e.g. ``"val_accuracy"``.
        path: where to save a PNG; nothing is saved when None.
        title: figure title; default names the metric, the band and the seed counts.
        level: confidence level of the band (``mean ± t * std / sqrt(n)`` over all seeds of the variant). For
            accuracies and AUROCs the band is clipped to their range [0, 1]: with 3 seeds, t is 4.3 and the
            interval can reach past 1. The report's tables give the unclipped interval.

    Returns:
        The figure: one axes, one line and one shaded band per variant.
    """
    rows = summarize(runs, metric, level)
    # Many variants (a baselines experiment has 11): 20 distinct colours, fainter bands, the legend beside the axes.
    many = len(runs) > CROWDED
    figure = new_figure(8.6 if many else 6.4, 4.4)
    axes = figure.add_subplot()
    colours = colormaps["tab20" if len(runs) > 10 else "tab10"].colors
    seed_counts: list[int] = []
    for index, variant in enumerate(runs):
        variant_rows = [row for row in rows if row.variant == variant]
        if not variant_rows:
            continue
        labels = np.asarray([row.labels for row in variant_rows])
        means = np.asarray([row.mean for row in variant_rows])
        low = np.asarray([row.ci_low for row in variant_rows])
        high = np.asarray([row.ci_high for row in variant_rows])
        if metric.endswith(BOUNDED_METRICS):
            low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
        n_seeds = max(row.n for row in variant_rows)
        seed_counts.append(n_seeds)
        colour = colours[index % len(colours)]
        axes.plot(labels, means, marker="o", markersize=3, color=colour, label=f"{variant} (n={n_seeds})")
        axes.fill_between(labels, low, high, color=colour, alpha=0.07 if many else 0.2, linewidth=0)
    axes.set_xlabel("number of labeled images")
    axes.set_ylabel(_metric_label(metric))
    if title is None:
        seeds = (
            f"{min(seed_counts)}" if min(seed_counts) == max(seed_counts) else f"{min(seed_counts)}-{max(seed_counts)}"
        )
        clipped = " clipped to [0, 1]" if metric.endswith(BOUNDED_METRICS) else ""
        title = f"{_metric_label(metric)}: mean, {level:.0%} band{clipped}, {seeds} seeds"
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if many:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    else:
        axes.legend(loc="best")
    if path is not None:
        save_png(figure, path)
    return figure


def figure_to_tensorboard(figure: Figure, writer: Any, tag: str, step: int = 0) -> None:
    """Log ``figure`` as an image under ``tag`` at ``step``.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (e.g. ``trainer.logger.experiment``), or a
            ``TensorBoardLogger`` whose ``experiment`` is one.
    """
    target = writer if hasattr(writer, "add_figure") else getattr(writer, "experiment", None)
    if not hasattr(target, "add_figure"):
        raise TypeError(f"expected a SummaryWriter or TensorBoardLogger, got {type(writer).__name__}")
    # close=False: the caller still owns the figure (it may also be saved as PNG).
    target.add_figure(tag, figure, global_step=step, close=False)
