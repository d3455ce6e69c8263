"""DDP on the CPU (gloo, 2 processes): acquisition and evaluation equal one process's on equal weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli_runs
from tests.helpers.cli_runs import read_csv, train, train_in_process

pytestmark = [pytest.mark.ddp, pytest.mark.slow, pytest.mark.timeout(600)]

DDP = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
# Weights that never change: one epoch per round is all the comparison needs (more would train nothing).
FROZEN = [
    "--model.class_path=tests.helpers.frozen_task_model.FrozenTaskModel",
    "--active.max_labels=120",
    "--active.epochs_first=1",
    "--active.epochs_increment=0",
]


@pytest.mark.parametrize(
    ("config", "overlay"),
    [
        # BALD: its dropout masks are drawn on every rank, on top of what every heuristic does under DDP (embedding
        # sharded over ranks and gathered, selection on rank zero and broadcast). The other heuristics differ in
        # per-batch functions of the rows they get (entropy, margin and least confidence: of the logits) or in
        # rank zero's select (core-set, MedAL, BADGE, random): one DDP run covers the loop's part for all of them.
        ("digits_entropy.yaml", "bald.yaml"),
        # ClassBalanced(CoreSet): the labeled set's targets and the probabilities on top of the inner outputs, on
        # rank zero; its picks must not depend on how the ranks sharded the embedding.
        ("digits_coreset.yaml", "class_balanced_coreset.yaml"),
        # NearestCandidates(CoreSet): every rank computes the pixel features and the candidates on its own; the picks,
        # positions into those candidates, must name the same images on every rank.
        ("digits_coreset.yaml", "nearest_candidates_coreset.yaml"),
    ],
)
def test_ddp_selects_what_one_process_does(tmp_path: Path, config: str, overlay: str | None) -> None:
    """The same picks in the same order; scores and metrics equal up to float rounding (each rank embeds other
    batches, so matrix products sum in another order)."""
    overlays = cli_runs.overlay(overlay) if overlay else []
    assert_ddp_equals_one_process(tmp_path, config, [*FROZEN, *overlays])


def test_ddp_cold_start_picks_what_one_process_does(tmp_path: Path) -> None:
    """A start with no labels (TypiClust on VAE features, before any task model) under DDP: the pool embedded in
    shards, the first picks made on rank zero and broadcast, then core-set's rounds."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from alvae_pl.data.sources import DigitsSource
    from alvae_pl.models.vae import VAE

    images = DigitsSource().load().train.images[:128]
    torch.manual_seed(0)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(VAE(), DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=64))
    trainer.save_checkpoint(tmp_path / "vae.ckpt")
    start = tmp_path / "start.yaml"
    start.write_text(
        "active:\n  start:\n    class_path: alvae_pl.acquisition.TypiClust\n    init_args:\n      features:\n"
        f"        vae: {{checkpoint: {tmp_path / 'vae.ckpt'}}}\n        task_weight: 0\n"
    )
    assert_ddp_equals_one_process(tmp_path, "digits_coreset.yaml", [*FROZEN, "--config", str(start)])


def assert_ddp_equals_one_process(tmp_path: Path, config: str, arguments: list[str]) -> None:
    # One process: this one (the DDP run needs train.py's own interpreter, which Lightning launches again per rank).
    single = train_in_process(config, tmp_path / "single", *arguments, "--trainer.devices=1")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = train(config, tmp_path / "ddp", *arguments, *DDP, timeout=500)
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


def test_ddp_ranks_hold_the_label_aware_vae_rank_zero_trains(tmp_path: Path) -> None:
    """Rank zero retrains the label-aware VAE at each round's start and sends its weights: every rank embeds its shard
    of the pool with the same V(u) (a probe gathers each rank's weight checksum after every epoch)."""
    probe = tmp_path / "probe.yaml"
    probe.write_text("trainer:\n  callbacks:\n    - class_path: tests.helpers.vae_probe.LabelAwareVAEProbe\n")
    arguments = [
        "--config",
        str(cli_runs.REPOSITORY / "configs" / "vae_features" / "label_aware.yaml"),
        "--active.heuristic.init_args.features.vae.init_args.marginalize=mean_field",
        "--active.heuristic.init_args.features.vae.init_args.epochs_per_round=1",
        "--data.pool_size=300",
        "--active.max_labels=120",
        "--active.epochs_first=1",
        "--active.epochs_increment=0",
        "--config",
        str(probe),
    ]
    ddp = train("digits_coreset.yaml", tmp_path, *arguments, *DDP, timeout=500)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    run = tmp_path / "digits_coreset" / "seed_0"
    checksums = json.loads((run / "vae_checksums.json").read_text())
    assert len(checksums) == 2 and all(len(ranks) == 2 for ranks in checksums)  # two rounds of one epoch, two ranks
    assert all(ranks[0] == ranks[1] for ranks in checksums), checksums  # one VAE on every rank
    assert checksums[0][0] != checksums[1][0]  # retrained between the rounds
    history = read_csv(run / "history.csv")
    assert [row["labels"] for row in history] == ["60", "120"]
    assert all(float(row["vae_knn_accuracy"]) > 0.3 for row in history), history  # measured each round, on rank zero
