"""Algorithm 1 inside one fit: the round schedule, the records, exact resume after SIGKILL, bad input."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from alvae_pl.acquisition.entropy import Entropy, prediction_entropy
from alvae_pl.callbacks.active_learning_loop import ActiveLearningLoop
from alvae_pl.cli import main
from tests.helpers.cli_runs import (
    QUICK,
    RESNET18,
    kill_switch_config,
    overlay,
    read_csv,
    train,
    train_in_process,
    without_timings,
)


def test_schedule_follows_the_paper_and_ends_with_what_is_left() -> None:
    loop = ActiveLearningLoop(budget=3000)
    assert loop.label_schedule(25000, 3000) == [3000, 6000, 9000, 12000, 15000, 18000, 21000, 24000, 25000]
    assert [loop.round_epochs(r) for r in range(3)] == [10, 15, 20]
    assert ActiveLearningLoop(budget=3000, max_labels=12000).label_schedule(30000, 3000) == [3000, 6000, 9000, 12000]


@pytest.mark.parametrize(
    ("budget", "max_labels", "message"),
    [(3000, 40000, "max_labels=40000 exceeds"), (3000, 1000, "below data.initial_labels"), (30000, None, "budget")],
)
def test_impossible_schedules_say_what_to_change(budget: int, max_labels: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ActiveLearningLoop(budget=budget, max_labels=max_labels).label_schedule(25000, 3000)


def test_entropy_picks_the_most_uncertain_and_sums_findings_for_multilabel() -> None:
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    entropy = prediction_entropy(logits, multilabel=False)
    assert entropy[1].item() == pytest.approx(torch.log(torch.tensor(3.0)).item())
    picks = Entropy().select({"entropy": entropy, "index": torch.arange(3)}, {}, 2, torch.Generator())
    assert picks.positions.tolist() == [1, 2]
    multilabel = prediction_entropy(torch.tensor([[0.0, 0.0], [0.0, 100.0]]), multilabel=True)
    assert multilabel.tolist() == pytest.approx([2 * 0.693147, 0.693147], rel=1e-5)


@pytest.mark.slow
def test_digits_run_learns_and_records_every_round(tmp_path: Path) -> None:
    # The demo config's own settings (the real ResNet-18, batch 16, lr 0.02, batch-norm statistics recomputed), two
    # rounds: 100 -> 200. The accuracies below are the real network's: this run stays on it.
    demo = ["--data.initial_labels=100", "--data.batch_size=16", "--active.budget=100", "--active.epochs_first=4"]
    result = train("digits_random.yaml", tmp_path, *RESNET18, *demo, "--active.max_labels=200")
    assert result.returncode == 0, result.stderr[-3000:]
    # Every line a user sees is true and worth reading: none of Lightning's idle notices.
    for idle in ("litlogger", "`max_epochs` was not set", "smaller than the logging interval", "LeafSpec"):
        assert idle not in result.stdout + result.stderr, idle
    run = tmp_path / "digits_random" / "seed_0"
    history = read_csv(run / "history.csv")
    assert [int(r["labels"]) for r in history] == [100, 200]
    assert [int(r["epochs"]) for r in history] == [4, 5]
    assert history[-1]["acquisition_seconds"] == "" and float(history[0]["acquisition_seconds"]) >= 0
    # Ten balanced classes: chance is 0.1; a working model is far above it, from its first round on.
    assert float(history[0]["test_accuracy"]) > 0.35, history[0]
    assert float(history[-1]["test_accuracy"]) > 0.5, history[-1]
    assert float(history[-1]["test_auroc"]) > 0.8
    labeled = read_csv(run / "labeled.csv")
    assert len(labeled) == 200 and len({r["pool_index"] for r in labeled}) == 200
    assert [sum(r["round"] == str(k) for r in labeled) for k in range(2)] == [100, 100]
    assert (run / "checkpoints" / "last.ckpt").exists()
    events = EventAccumulator(str(run)).Reload()
    assert [e.step for e in events.Scalars("al/test_accuracy")] == [100, 200]
    assert events.Scalars("al/test_accuracy")[-1].value == pytest.approx(float(history[-1]["test_accuracy"]), 1e-4)


#: The BALD overlay: a dropout-trained model and seeded Monte-Carlo masks (see the test below).
BALD = overlay("bald.yaml")


@pytest.mark.slow
def test_killed_runs_resume_to_exactly_the_uninterrupted_records(tmp_path: Path, reference_run) -> None:
    # BALD (the overlay on the entropy config) holds the most randomness a run has: dropout in training, and masks
    # drawn from the round's generator at every acquisition. Both must come out the same after a resume.
    expected = reference_run("digits_entropy.yaml", *BALD)
    folder = tmp_path / "killed"
    folder.mkdir()
    # Killed mid-epoch in round one, then at the end of round two after its acquisition was written but before
    # the checkpoint was: the resumed run must neither lose nor repeat a label.
    for kill in ("{at_step: 5}", "{at_checkpoint_of_epoch: 4}"):
        switch = folder / "kill.yaml"
        switch.write_text(kill_switch_config(kill))
        killed = train("digits_entropy.yaml", folder, *BALD, "--config", str(switch), "--ckpt_path=last")
        assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = train("digits_entropy.yaml", folder, *BALD, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    actual = folder / "digits_entropy" / "seed_0"
    assert read_csv(actual / "labeled.csv") == read_csv(expected / "labeled.csv")
    assert without_timings(read_csv(actual / "history.csv")) == without_timings(read_csv(expected / "history.csv"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--active.budget=5000", "active.budget=5000 exceeds"),
        ("--data.initial_labels=0", "initial_labels=0"),
        ("--data.source.init_args.image_size=0", "image_size=0"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, override: str, message: str) -> None:
    result = train_in_process("digits_random.yaml", tmp_path, override)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error:") and message in last_line, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "digits_random" / "seed_0" / "history.csv").exists()


def test_train_accuracy_target_ends_rounds_early(tmp_path: Path) -> None:
    result = train_in_process(
        "digits_random.yaml", tmp_path, "--active.train_accuracy_target=0.0", "--active.max_labels=120"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    history = read_csv(tmp_path / "digits_random" / "seed_0" / "history.csv")
    assert [(int(r["labels"]), int(r["epochs"])) for r in history] == [(60, 1), (120, 1)]


def test_paper_chestmnist_config_runs_multilabel_on_a_medmnist_file(tmp_path: Path, make_medmnist_npz) -> None:
    data = make_medmnist_npz("chestmnist.npz", sizes=(200, 40, 40), multilabel=True, num_classes=14)
    result = train_in_process(
        "chestmnist_coreset.yaml",
        tmp_path,
        f"--data.source.init_args.root={data.parent}",
        "--data.source.init_args.download=false",
        "--model.init_args.weights=null",
        "--trainer.devices=1",
        "--data.pool_size=150",
        "--active.max_labels=120",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    history = read_csv(tmp_path / "chestmnist_coreset" / "seed_0" / "history.csv")
    assert [int(r["labels"]) for r in history] == [60, 120]
    assert all(0.0 <= float(r["val_auroc"]) <= 1.0 and 0.0 <= float(r["test_accuracy"]) <= 1.0 for r in history)
    labeled = read_csv(tmp_path / "chestmnist_coreset" / "seed_0" / "labeled.csv")
    assert all(int(r["dataset_index"]) < 200 for r in labeled)  # train split only, never val or test


def test_missing_medmnist_file_names_path_url_and_flag(tmp_path: Path) -> None:
    result = train_in_process(
        "chestmnist_coreset.yaml",
        tmp_path,
        f"--data.source.init_args.root={tmp_path}/nowhere",
        "--data.source.init_args.download=false",
    )
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error:") and "chestmnist.npz" in message and "https://" in message
    assert "download" in message and "Traceback" not in result.stderr


#: Every shipped config that reads a downloadable data set (MedMNIST or torchvision's MNIST).
DOWNLOADING_CONFIGS = sorted(
    path.name
    for path in (Path(__file__).resolve().parent.parent / "configs").glob("*.yaml")
    if path.name.startswith(
        ("mnist_", "chestmnist_", "vae_mnist", "vae_chestmnist", "contrastive_mnist", "contrastive_chestmnist")
    )
)


@pytest.mark.parametrize("config", DOWNLOADING_CONFIGS)
def test_every_shipped_config_offline_says_where_the_data_goes(
    config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    root = tmp_path / "data"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                f"configs/{config}",
                f"--data.source.init_args.root={root}",
                f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
            ]
        )
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    # The project's own message (where the file goes, what to do), not the socket error underneath it.
    assert message.startswith("error: downloading") and str(root) in message, message
    assert "put" in message and ("https://" in message or "ubyte" in message), message
    assert not (tmp_path / "logs").exists()  # nothing written


def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}, "pytorch-lightning_version": "2.6.6"}, foreign)
    result = train_in_process("digits_random.yaml", tmp_path, f"--ckpt_path={foreign}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: the checkpoint does not fit this model")


def test_every_round_starts_from_the_round_zero_weights_with_a_fresh_optimizer(tmp_path: Path) -> None:
    probe = tmp_path / "probe.yaml"
    probe.write_text("trainer:\n  callbacks:\n    - class_path: tests.helpers.round_probe.RoundProbe\n")
    cli = main(["fit", "--config", "configs/digits_random.yaml", "--config", str(probe),
                f"--trainer.logger.init_args.save_dir={tmp_path}", *QUICK, "--active.epochs_first=1",
                "--active.epochs_increment=1"])  # fmt: skip
    rounds = next(c for c in cli.trainer.callbacks if type(c).__name__ == "RoundProbe").rounds
    assert [r["round"] for r in rounds] == [0, 1, 2] and [r["labeled"] for r in rounds] == [60, 120, 180]
    assert all(r["initial_weights"] and r["fresh_optimizer"] for r in rounds), rounds


def test_a_run_folder_that_holds_a_run_is_never_trained_into_again(tmp_path: Path) -> None:
    first = train_in_process("digits_random.yaml", tmp_path, "--active.max_labels=60")  # one round
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "digits_random" / "seed_0"
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    again = train_in_process("digits_random.yaml", tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    message = again.stderr.strip().splitlines()[-1]
    assert message.startswith("error:") and "already holds a run" in message and "--ckpt_path last" in message
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            ["--active.heuristic=Nope"],
            "error: --active.heuristic: unknown heuristic 'Nope'; known: BADGE, BALD, ClassBalanced, CoreSet, Entropy, "
            "LearningLoss, LeastConfidence, Margin, MedAL, NearestCandidates, ProbCover, RandomSampling, TypiClust "
            "(or a full class path)",
        ),
        (
            ["--active.heuristic=MedAL", "--active.heuristic.init_args.bogus=1"],
            "error: --active.heuristic: Problem with given class_path 'alvae_pl.acquisition.MedAL': Option 'bogus' "
            "is not accepted",
        ),
        (["--active.budget=x"], "error: --active.budget: Expected a <class 'int'>. Got value: x"),
        (["--nope=3"], "error: unrecognized arguments: --nope=3 (python train.py fit --help lists every option)"),
    ],
)
def test_bad_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str], expected: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                "configs/digits_random.yaml",
                f"--trainer.logger.init_args.save_dir={tmp_path}",
                *options,
            ]
        )
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [expected]
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_heuristic_can_be_named_by_its_short_class_name(tmp_path: Path) -> None:
    from alvae_pl.acquisition.medal import MedAL

    cli = main(
        ["--config", "configs/digits_random.yaml", f"--trainer.logger.init_args.save_dir={tmp_path}",
         "--active.heuristic=MedAL"],
        run=False,
    )  # fmt: skip
    loop = next(c for c in cli.trainer.callbacks if isinstance(c, ActiveLearningLoop))
    assert type(loop.heuristic) is MedAL


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("--trainer.max_epochs=3", "trainer.max_epochs=3 stops the run before the schedule's 9 epochs"),
        ("--trainer.reload_dataloaders_every_n_epochs=2", "reload_dataloaders_every_n_epochs=2: active learning"),
        ("--trainer.limit_val_batches=1.0", "the Trainer validates every epoch but active.validate_every_epoch"),
    ],
)
def test_trainer_settings_the_loop_cannot_run_under_are_refused_not_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, message: str
) -> None:
    # QUICK's schedule: 60 -> 120 -> 180 labels in 2 + 3 + 4 = 9 epochs (Lightning's default max_epochs leaves room).
    with pytest.raises(SystemExit):
        main(["fit", "--config", "configs/digits_random.yaml", f"--trainer.logger.init_args.save_dir={tmp_path}",
              *QUICK, setting])  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and message in error
    assert not list(tmp_path.rglob("*.csv"))  # refused before anything was written


def test_what_the_loop_needs_is_filled_in_where_the_user_left_it_unset(tmp_path: Path) -> None:
    cli = main(["--config", "configs/digits_random.yaml", f"--trainer.logger.init_args.save_dir={tmp_path}",
                *QUICK, "--active.max_labels=60"], run=False)  # fmt: skip
    trainer = cli.trainer
    assert trainer.reload_dataloaders_every_n_epochs == 1
    assert trainer.limit_val_batches == 0 and trainer.num_sanity_val_steps == 0
    validating = main(["--config", "configs/digits_random.yaml", "--active.validate_every_epoch=true",
                       f"--trainer.logger.init_args.save_dir={tmp_path}"], run=False)  # fmt: skip
    assert validating.trainer.limit_val_batches == 1.0
