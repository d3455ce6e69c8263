"""A start with no labels: the first images chosen before any task model exists, simulated and by an expert."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from alvae_pl.acquisition import TypiClust
from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.callbacks.active_learning_loop import ActiveLearningLoop
from alvae_pl.cli import EXIT_WAITING_FOR_LABELS, main
from alvae_pl.data.digits_folder import write_digits_folder
from alvae_pl.data.label_pool import LabelPool
from alvae_pl.data.sources import DigitsSource
from alvae_pl.models.vae import VAE
from alvae_pl.models.vae_features import VAEFeatures
from alvae_pl.run_status import read_run_status
from alvae_pl.seeding import START_STREAM, derive_seed
from tests.helpers.cli_runs import read_csv, without_timings

REPOSITORY = Path(__file__).resolve().parents[1]
TINY = str(REPOSITORY / "tests" / "conf" / "task_tiny.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def vae_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VAE trained for a few steps on the digits: its features are fixed, which is all a selection needs."""
    images = DigitsSource().load().train.images[:256]
    torch.manual_seed(0)
    trainer = L.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(VAE(), DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=64))
    path = tmp_path_factory.mktemp("vae") / "vae.ckpt"
    trainer.save_checkpoint(path)
    return path


def start_overlay(folder: Path, checkpoint: Path, heuristic: str = "TypiClust") -> list[str]:
    overlay = folder / "start.yaml"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    overlay.write_text(
        f"active:\n  start:\n    class_path: alvae_pl.acquisition.{heuristic}\n    init_args:\n      features:\n"
        f"        vae: {{checkpoint: {checkpoint}, alpha: 1.0, normalize: false}}\n        task_weight: 0\n"
    )
    return ["--config", str(overlay)]


def test_a_cold_start_picks_what_typiclust_picks_on_the_vae_features(tmp_path: Path, vae_checkpoint: Path) -> None:
    """Through ``train.py``: round 0's labels are TypiClust's picks on V(u) of the pool, computed here directly."""
    arguments = ["fit", "--config", TINY, *start_overlay(tmp_path, vae_checkpoint), *QUIET,
                 "--data.initial_labels=20", "--active.budget=20", "--active.max_labels=40"]  # fmt: skip
    main([*arguments, f"--trainer.logger.init_args.save_dir={tmp_path / 'a'}"])
    labeled = read_csv(tmp_path / "a" / "task_tiny" / "seed_0" / "labeled.csv")
    first = [row for row in labeled if row["round"] == "0"]
    assert len(first) == 20 and len(labeled) == 40
    assert all(row["score"] != "" for row in first)  # the picks' typicality, not the blank of random labels

    # The reference: the same pool, V(u) of every pool image (in the loop's evaluation batches), TypiClust's select.
    data = DigitsSource().load()
    pool = LabelPool(len(data.train), None, 0, pool_seed=0, defer_initial=True)
    assert pool.num_labeled == 0
    features = FeatureSpace(VAEFeatures(str(vae_checkpoint), normalize=False), task_weight=0)
    features.setup(data, torch.device("cpu"))
    images = data.train.images[pool.dataset_indices]
    with torch.inference_mode():
        vae = torch.cat([features.embed(None, images[i : i + 512])["vae"] for i in range(0, len(images), 512)])
    generator = torch.Generator().manual_seed(derive_seed(0, START_STREAM, 1))
    positions = torch.arange(len(pool))
    expected = TypiClust(features).select(
        {"vae": vae, "index": positions}, {"index": positions[:0]}, 20, generator
    ).positions  # fmt: skip
    assert [int(row["pool_index"]) for row in first] == expected.tolist()

    # Same seeds, same picks (the whole record).
    main([*arguments, f"--trainer.logger.init_args.save_dir={tmp_path / 'b'}"])
    assert read_csv(tmp_path / "b" / "task_tiny" / "seed_0" / "labeled.csv") == labeled


def test_a_start_that_reads_the_task_model_is_refused() -> None:
    with pytest.raises(ValueError, match="active.start chooses the first labels before any task model exists"):
        ActiveLearningLoop(start=TypiClust())  # task features: there is no task model yet


def _lab_arguments(lab: Path, logs: Path, *extra: str) -> list[str]:
    source = "--data.source.init_args."
    return ["fit", "--config", str(REPOSITORY / "configs" / "lab_digits.yaml"),
            f"{source}images={lab / 'images'}", f"{source}labels={lab / 'labels.csv'}",
            f"{source}val_labels={lab / 'val.csv'}", f"{source}val_images={lab / 'val'}",
            f"{source}test_labels={lab / 'test.csv'}", f"{source}test_images={lab / 'test'}",
            f"--trainer.logger.init_args.save_dir={logs}", *QUIET, "--data.initial_labels=20", "--active.budget=20",
            "--active.max_labels=40", "--active.epochs_first=1", "--active.epochs_increment=0", *extra]  # fmt: skip


def _answer(query: Path, key: Path) -> None:
    """The expert fills in the query file's label column, in place."""
    truth = {row["file"]: row["label"] for row in read_csv(key)}
    rows = read_csv(query)
    for row in rows:
        row["label"] = truth[row["file"]]
    with open(query, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_lab_with_no_labels_gets_its_first_query_before_any_training(
    tmp_path: Path, vae_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    key = lab / "answer_key.csv"
    (lab / "labels.csv").write_text("file,label\n")  # not one image labeled
    start = start_overlay(tmp_path, vae_checkpoint)
    human = _lab_arguments(lab, tmp_path / "human", *start)
    run = tmp_path / "human" / "lab_digits" / "run"

    assert main(human).exit_status() == EXIT_WAITING_FOR_LABELS  # no training: round 0's query goes out
    assert "Round 0 waits for labels: 20 of 20 images" in capsys.readouterr().err
    query = run / "query_round_0.csv"
    assert len(read_csv(query)) == 20
    with Image.open(run / "query_round_0.png") as sheet:
        assert sheet.width > 10 * 28
    assert read_csv(run / "history.csv") == [] and read_csv(run / "labeled.csv") == []
    assert read_run_status(run) == "waiting_for_labels"
    assert (run / "checkpoints" / "last.ckpt").is_file()  # the open query survives

    _answer(query, key)
    main(human)  # round 0 trains on the answers; round 1's query goes out
    _answer(run / "query_round_1.csv", key)
    assert main(human).exit_status() == 0
    assert "Finished: 2 rounds, 40 labels" in capsys.readouterr().err
    assert read_run_status(run) == "finished"

    # The simulation: every label known, revealed as soon as the start (then the heuristic) picks.
    simulation = [f"--data.source.init_args.labels={key}", "--active.oracle=alvae_pl.oracles.SimulatedOracle",
                  "--ckpt_path=null"]  # fmt: skip
    main([*_lab_arguments(lab, tmp_path / "simulated", *start), *simulation])
    simulated = tmp_path / "simulated" / "lab_digits" / "run"
    assert read_csv(run / "labeled.csv") == read_csv(simulated / "labeled.csv")
    assert without_timings(read_csv(run / "history.csv")) == without_timings(read_csv(simulated / "history.csv"))
    assert [row["labels"] for row in read_csv(run / "history.csv")] == ["20", "40"]
