"""What features know about the classes: the measures on known cases, and the command on a mixture-prior VAE that
``configs/vae_digits_mixture.yaml`` trains and that core-set then uses through ``train.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alvae_pl.cli import main as train_main
from alvae_pl.experiments.cli import main as experiment_main
from alvae_pl.models.class_knowledge import measure
from tests.helpers.cli_runs import first_acquisition, read_csv


def test_separated_clusters_are_known_perfectly_and_noise_not_at_all() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    separated = np.eye(4)[labels] * 10 + rng.normal(0, 0.1, (200, 4))
    known = measure("separated", separated, labels)
    assert known.knn_accuracy == 1.0 and known.kmeans_nmi == pytest.approx(1.0)
    noise = measure("noise", rng.normal(size=(200, 4)), labels)
    assert noise.knn_accuracy < 0.45 and noise.kmeans_nmi < 0.1  # chance: 0.25 and 0
    multilabel = measure("findings", separated, np.eye(4)[labels][:, :3].astype(np.int64))  # 0/1 vectors
    assert multilabel.knn_accuracy == 1.0 and multilabel.kmeans_nmi > 0.9


@pytest.fixture(scope="module")
def mixture_vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits VAE with a mixture prior, trained by its shipped config for 2 epochs."""
    folder = tmp_path_factory.mktemp("vae")
    train_main(
        ["fit", "--config", "configs/vae_digits_mixture.yaml", f"--trainer.logger.init_args.save_dir={folder}",
         "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"]
    )  # fmt: skip
    return folder / "vae_digits_mixture" / "seed_0" / "checkpoints" / "last.ckpt"


def test_features_command_measures_the_mixture_vae(mixture_vae: Path, tmp_path: Path, capsys) -> None:
    assert experiment_main(["features", "--vae", str(mixture_vae), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "VAE V(u), mixture prior (vae_digits_mixture)" in printed
    (row,) = read_csv(tmp_path / "feature_knowledge.csv")
    # After 2 epochs the posterior means already tell the 10 digits apart far above chance (0.1 and 0).
    assert float(row["knn_accuracy"]) > 0.5 and float(row["kmeans_nmi"]) > 0.2
    assert (tmp_path / "feature_knowledge_tsne.png").stat().st_size > 10_000
    assert (tmp_path / "feature_knowledge.md").read_text().count("|") > 10


def test_features_command_refuses_a_checkpoint_without_its_run_in_one_line(tmp_path: Path, capsys) -> None:
    stray = tmp_path / "last.ckpt"
    stray.write_bytes(b"not a checkpoint")
    assert experiment_main(["features", "--vae", str(stray)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "config.yaml is missing" in error and "\n" not in error


def test_core_set_runs_on_the_mixture_vae_features(mixture_vae: Path, tmp_path: Path) -> None:
    vae = f"--active.heuristic.init_args.features.vae.checkpoint={mixture_vae}"
    _, picked = first_acquisition(tmp_path, "digits_coreset_vae.yaml", vae)
    assert len(picked) == 60 and picked == sorted(picked, reverse=True) and picked[-1] > 0
