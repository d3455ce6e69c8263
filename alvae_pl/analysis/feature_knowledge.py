"""How much class information a feature space carries: the paper's hypothesis about "the homogeneous nature of the
VAE", measured.

For the test split of a data set, embed every image with a VAE's posterior mean V(u) and/or a finished task run's
512-d embedding T_f(u), then report with scikit-learn:

- ``knn_accuracy``: accuracy of a 5-nearest-neighbour classifier, 5-fold stratified cross-validation on the test
  split (how well the neighbourhoods the distance heuristics measure agree with the classes);
- ``kmeans_nmi``: normalised mutual information between the classes and a k-means clustering with as many clusters
  as classes (at most ``MAX_CLUSTERS``; how well the space's own structure matches the classes, without labels);

and draw a t-SNE map of each feature space coloured by class. Multi-label data (ChestMNIST) counts each distinct
0/1 finding vector as a class for k-means NMI and asks k-NN for the whole vector (subset accuracy); the maps
colour by the number of findings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from alvae_pl.analysis.curves import new_figure, save_png
from alvae_pl.analysis.tsne_figure import embed_tsne
from alvae_pl.atomic_files import atomic_write_text, write_csv
from alvae_pl.finished_run import load_finished_run, rebuild_run
from alvae_pl.models.class_knowledge import FOLDS, NEIGHBOURS, Knowledge, measure
from alvae_pl.run_folder import CONFIG_FILENAME


def markdown(rows: list[Knowledge]) -> str:
    lines = [
        f"| features | dim | {NEIGHBOURS}-NN accuracy ({FOLDS}-fold) | k-means NMI |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r.name} | {r.dim} | {r.knn_accuracy:.3f} | {r.kmeans_nmi:.3f} |" for r in rows]
    return "\n".join(lines) + "\n"


def draw_maps(spaces: Mapping[str, np.ndarray], targets: np.ndarray, seed: int, path: Path) -> Path:
    """One t-SNE panel per feature space, points coloured by class (multi-label: by number of findings)."""
    colours = targets if targets.ndim == 1 else targets.sum(axis=1)
    figure = new_figure(5.0 * len(spaces), 4.6)
    for position, (name, features) in enumerate(spaces.items(), start=1):
        axes = figure.add_subplot(1, len(spaces), position)
        points = embed_tsne(features, seed)
        scatter = axes.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", s=6)
        axes.set_title(name, fontsize=9)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.colorbar(scatter, ax=figure.axes, label="class" if targets.ndim == 1 else "findings")
    return save_png(figure, path)


@torch.no_grad()
def _embed(encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch: int = 512) -> np.ndarray:
    """``encode`` over uint8 ``images`` ``[N, C, H, W]`` in batches: float ``[N, D]``."""
    return torch.cat([encode(images[start : start + batch]).float() for start in range(0, len(images), batch)]).numpy()


def report_knowledge(
    vae: str | Path | None = None, run: str | Path | None = None, out: str | Path | None = None, seed: int = 0
) -> tuple[list[Knowledge], Path]:
    """Measure a VAE checkpoint's V(u) and/or a finished task run's T_f(u) on the test split of their data.

    Args:
        vae: an encoder checkpoint ``<run>/checkpoints/last.ckpt`` (a VAE's or a contrastive encoder's); its run's
            ``config.yaml`` names the data.
        run: the folder of a finished task run (see :func:`alvae_pl.finished_run.load_finished_run`).
        out: folder for ``feature_knowledge.md`` / ``.csv`` / ``_tsne.png``; default: beside the first source.
        seed: seeds the folds, k-means and t-SNE.

    Returns:
        the rows, and the markdown file written.
    """
    if vae is None and run is None:
        raise ValueError("name --vae CHECKPOINT and/or --run FOLDER")
    spaces: dict[str, np.ndarray] = {}
    targets = None
    if run is not None:
        model, datamodule = load_finished_run(run)
        test = datamodule.data.test
        name = f"task model T_f(u) ({Path(run).parent.name}/{Path(run).name})"
        spaces[name] = _embed(lambda images: model.forward_features(images).embedding, test.images)
        targets = test.targets.numpy()
    if vae is not None:
        from alvae_pl.models.encoder_checkpoint import features_from_checkpoint

        vae = Path(vae)
        config = vae.parent.parent / CONFIG_FILENAME
        if not config.is_file():
            raise FileNotFoundError(f"{config} is missing: pass the last.ckpt of a VAE run written by train.py")
        datamodule = rebuild_run(config).datamodule
        test = datamodule.data.test
        if targets is not None and not np.array_equal(test.targets.numpy(), targets):
            raise ValueError(f"the VAE at {vae} was trained on other data than the run {run}: pass a matching pair")
        features = features_from_checkpoint(vae).load(datamodule.num_channels, datamodule.image_size)
        spaces[f"{features.name} ({vae.parent.parent.parent.name})"] = _embed(features, test.images)
        targets = test.targets.numpy()
    rows = [measure(name, features, targets, seed) for name, features in spaces.items()]
    folder = Path(out) if out is not None else (vae.parent.parent if vae is not None else Path(run))
    write_csv(
        folder / "feature_knowledge.csv",
        ("features", "dim", "knn_accuracy", "kmeans_nmi"),
        ([r.name, r.dim, r.knn_accuracy, r.kmeans_nmi] for r in rows),
    )
    draw_maps(spaces, targets, seed, folder / "feature_knowledge_tsne.png")
    return rows, atomic_write_text(folder / "feature_knowledge.md", markdown(rows))
