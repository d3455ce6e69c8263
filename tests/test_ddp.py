"""DDP on the CPU (gloo, 2 processes): acquisition and evaluation equal one process's on equal weights."""

from __future__ import annotations

from pathlib import Path

import cli_runs
import pytest
from cli_runs import read_csv, train

pytestmark = [pytest.mark.ddp, pytest.mark.slow, pytest.mark.timeout(600)]

DDP = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
FROZEN = ["--model.class_path=frozen_task_model.FrozenTaskModel", "--active.max_labels=120"]


@pytest.mark.parametrize(
    ("config", "overlay"),
    [
        # BALD: its dropout masks are drawn on every rank, on top of what every heuristic does under DDP (embedding
        # sharded over ranks and gathered, selection on rank zero and broadcast). The other heuristics differ in
        # per-batch functions of the rows they get (entropy, margin and least confidence: of the logits) or in
        # rank zero's select (core-set, MedAL, BADGE, random): one DDP run covers the loop's part for all of them.
        ("digits_entropy.yaml", "bald.yaml"),
    ],
)
def test_ddp_selects_what_one_process_does(tmp_path: Path, config: str, overlay: str | None) -> None:
    """The same picks in the same order; scores and metrics equal up to float rounding (each rank embeds other
    batches, so matrix products sum in another order)."""
    overlays = cli_runs.overlay(overlay) if overlay else []
    single = train(config, tmp_path / "single", *FROZEN, *overlays, "--trainer.devices=1")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = train(config, tmp_path / "ddp", *FROZEN, *overlays, *DDP, timeout=500)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    name = config.removesuffix(".yaml")
    one, two = (tmp_path / kind / name / "seed_0" for kind in ("single", "ddp"))
    labeled_one, labeled_two = read_csv(one / "labeled.csv"), read_csv(two / "labeled.csv")
    picks = [[row[key] for key in ("round", "pool_index", "dataset_index")] for row in labeled_one]
    assert [[row[key] for key in ("round", "pool_index", "dataset_index")] for row in labeled_two] == picks
    for row_one, row_two in zip(labeled_one, labeled_two, strict=True):
        assert (row_one["score"] == "") == (row_two["score"] == "")
        if row_one["score"]:
            assert float(row_two["score"]) == pytest.approx(float(row_one["score"]), rel=1e-5)
    history_one, history_two = read_csv(one / "history.csv"), read_csv(two / "history.csv")
    assert [r["labels"] for r in history_two] == ["60", "120"]
    for row_one, row_two in zip(history_one, history_two, strict=True):
        for key in ("val_accuracy", "val_auroc", "test_accuracy", "test_auroc"):
            assert float(row_two[key]) == pytest.approx(float(row_one[key]), abs=1e-5), key


def test_ddp_ranks_measure_with_the_label_aware_vae_rank_zero_trained(tmp_path: Path) -> None:
    """Rank zero retrains the label-aware VAE each round and sends its weights: the ranks embed their shards of the
    pool with one V(u), so core-set on [T_f(u), V(u)] picks what one process picks (a rank with its own, untrained
    VAE would embed its half of the pool elsewhere), and the VAE's per-round class knowledge agrees."""
    label_aware = [
        "--config",
        str(cli_runs.REPOSITORY / "configs" / "vae_features" / "label_aware.yaml"),
        "--active.heuristic.init_args.features.vae.init_args.marginalize=mean_field",
        "--active.heuristic.init_args.features.vae.init_args.epochs_per_round=1",
        "--data.pool_size=300",
    ]
    single = train("digits_coreset.yaml", tmp_path / "single", *FROZEN, *label_aware, "--trainer.devices=1")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = train("digits_coreset.yaml", tmp_path / "ddp", *FROZEN, *label_aware, *DDP, timeout=500)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = (tmp_path / kind / "digits_coreset" / "seed_0" for kind in ("single", "ddp"))
    picks = [[row["round"], row["pool_index"]] for row in read_csv(one / "labeled.csv")]
    assert [[row["round"], row["pool_index"]] for row in read_csv(two / "labeled.csv")] == picks
    # Measured on rank zero, which trains with another number of CPU threads than one process does: the features
    # differ by float rounding, and k-means (not k-NN) may move a point between clusters.
    for row_one, row_two in zip(read_csv(one / "history.csv"), read_csv(two / "history.csv"), strict=True):
        assert float(row_two["vae_knn_accuracy"]) == pytest.approx(float(row_one["vae_knn_accuracy"]), abs=0.01)
        assert float(row_two["vae_kmeans_nmi"]) == pytest.approx(float(row_one["vae_kmeans_nmi"]), abs=0.05)
