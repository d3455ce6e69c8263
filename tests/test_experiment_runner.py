"""The multi-seed experiment runner, its report and the t-SNE selection figure (``experiment.py``)."""

from __future__ import annotations

import csv
import math
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from alvae_pl.analysis.history import HISTORY_COLUMNS
from alvae_pl.experiments import execution, jobs
from alvae_pl.experiments.cli import main as experiment_main
from alvae_pl.experiments.execution import ProcessResult, RunFailed, run_experiment
from alvae_pl.experiments.experiment import read_experiment
from alvae_pl.experiments.jobs import expand_jobs, select_jobs, task_run_state, vae_run_state
from alvae_pl.run_status import RUN_STATUS_FILE, write_run_status
from tests.helpers.cli_runs import REPOSITORY, TEST_CONFIGS, TINY

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = [100, 200, 300]


# --------------------------------------------------------------------------------------------- fixtures
def write_history(folder: Path, values: Sequence[float], finished: bool = True, labels: Sequence[int] = LABELS) -> None:
    """A ``history.csv`` and ``run_status.json`` as the loop writes them: only a finished run's last row has no
    acquisition time, and only its status says ``finished``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_run_status(folder, "finished" if finished else "training")
    with (folder / "history.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        for index, (count, value) in enumerate(zip(labels, values, strict=False)):
            last = finished and index == len(values) - 1
            accuracy = repr(float(value))
            writer.writerow(
                {
                    "round": index,
                    "labels": count,
                    "epochs": 2,
                    "train_accuracy": 1.0,
                    "val_accuracy": accuracy,
                    "val_auroc": 0.9,
                    "test_accuracy": accuracy,
                    "test_auroc": 0.9,
                    "train_seconds": 1.0,
                    "acquisition_seconds": "" if last else 0.5,
                }
            )


def write_vae_checkpoint(folder: Path, epochs_done: int, max_epochs: int) -> None:
    """What a VAE run leaves: its resolved ``config.yaml`` and a ``last.ckpt`` with the fit loop's progress."""
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_epochs": max_epochs}}))
    progress = {"total": {"ready": epochs_done, "started": epochs_done, "processed": epochs_done, "completed": 0}}
    loops = {"fit_loop": {"epoch_progress": progress}}
    checkpoint = {"epoch": epochs_done - 1, "global_step": 10 * epochs_done, "loops": loops}
    torch.save(checkpoint, folder / "checkpoints" / "last.ckpt")
    if epochs_done >= max_epochs:  # what the loop writes when a run without rounds ends normally
        write_run_status(folder, "finished", epochs=epochs_done)
    else:
        (folder / RUN_STATUS_FILE).unlink(missing_ok=True)


def write_config(path: Path, base: str, **changes: object) -> None:
    """``tests/conf/<base>`` with top-level sections updated from ``changes`` (one level deep), at ``path``."""
    content = yaml.safe_load((TEST_CONFIGS / base).read_text())
    for section, values in changes.items():
        content[section] = {**content.get(section, {}), **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(content, sort_keys=False))


def make_experiment(tmp_path: Path, with_vae: bool = True, **changes: object) -> Path:
    """An experiment YAML with variants ``base`` and ``base_vae`` (the latter reads the VAE), runs in tmp."""
    root = tmp_path / "runs"
    vae_checkpoint = root / "vae_toy" / "seed_0" / "checkpoints" / "last.ckpt"
    configs = tmp_path / "configs"
    configs.mkdir(exist_ok=True)
    write_config(configs / "base.yaml", "task_tiny.yaml")
    coreset = {"class_path": "CoreSet", "init_args": {"features": {"vae": {"checkpoint": str(vae_checkpoint)}}}}
    write_config(configs / "base_vae.yaml", "task_tiny.yaml", active={"heuristic": coreset})
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger"}
    logger["init_args"] = {"save_dir": str(root), "name": "vae_toy", "version": "seed_0"}
    write_config(configs / "vae.yaml", "vae_tiny.yaml", trainer={"max_epochs": 2, "logger": logger})
    content: dict[str, object] = {
        "name": "toy",
        "root": str(root),
        "seeds": [0, 1],
        "baseline": "base",
        "variants": {"base": str(configs / "base.yaml"), "base_vae": str(configs / "base_vae.yaml")},
        "overrides": ["--trainer.max_epochs=3"],
    }
    if with_vae:
        content["vae"] = str(configs / "vae.yaml")
    content.update(changes)
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def unfinish(folder: Path) -> None:
    """Takes away what says a run finished: as if it had been killed before its last round."""
    (folder / "history.csv").unlink()
    (folder / RUN_STATUS_FILE).unlink()


def argument(command: Sequence[str], key: str) -> str | None:
    values = [token.split("=", 1)[1] for token in command if token.startswith(key + "=")]
    return values[-1] if values else None


class FakeTrain:
    """Stands in for ``train.py`` (no training): records each command and writes what a finished run leaves."""

    def __init__(self, fail_variant: str | None = None) -> None:
        self.commands: list[list[str]] = []
        self.fail_variant = fail_variant

    def __call__(self, command: Sequence[str], log_path: Path, echo: bool) -> ProcessResult:
        self.commands.append(list(command))
        folder = log_path.parent
        config = command[command.index("--config") + 1]
        if Path(config).name == "vae.yaml":
            write_vae_checkpoint(folder, epochs_done=2, max_epochs=2)
            return ProcessResult(0, "")
        if self.fail_variant is not None and folder.parent.name == self.fail_variant:
            return ProcessResult(1, "Epoch 0\nTraceback (most recent call last):\nValueError: diverged\n")
        write_history(folder, [0.5, 0.6, 0.7])
        return ProcessResult(0, "")


def run_commands(fake: FakeTrain) -> list[str]:
    """``variant/seed_k`` (or ``vae``) of each command the fake received, in order."""
    names = []
    for command in fake.commands:
        name = argument(command, "--trainer.logger.init_args.name")
        version = argument(command, "--trainer.logger.init_args.version")
        names.append("vae" if name is None else f"{name.split('/')[-1]}/{version}")
    return names


# ------------------------------------------------------------------------------------------- jobs, states
def test_jobs_are_variant_major_and_selected_by_index_variant_or_seed(tmp_path: Path) -> None:
    experiment = read_experiment(make_experiment(tmp_path, seeds=[3, 5, 7]))
    jobs = expand_jobs(experiment)
    assert [(job.index, job.variant.name, job.seed) for job in jobs] == [
        (0, "base", 3), (1, "base", 5), (2, "base", 7), (3, "base_vae", 3), (4, "base_vae", 5), (5, "base_vae", 7)
    ]  # fmt: skip
    assert jobs[4].folder == tmp_path / "runs" / "toy" / "base_vae" / "seed_5"
    assert [job.index for job in select_jobs(experiment, index=4)] == [4]
    assert [job.index for job in select_jobs(experiment, seeds=[7])] == [2, 5]
    assert [job.index for job in select_jobs(experiment, variants=["base_vae"], seeds=[3])] == [3]
    assert len(select_jobs(experiment)) == 6
    with pytest.raises(ValueError, match="out of range.*6 jobs"):
        select_jobs(experiment, index=6)
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        select_jobs(experiment, variants=["nope"])
    with pytest.raises(ValueError, match="seed 4 is not one of"):
        select_jobs(experiment, seeds=[4])
    with pytest.raises(ValueError, match="either --index or --variant"):
        select_jobs(experiment, variants=["base"], index=0)


def write_checkpoint(path: Path) -> None:
    """A stand-in ``last.ckpt`` that reads as a checkpoint (a torch file is a zip archive)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"")


def test_run_state_comes_from_the_run_status_and_checkpoint(tmp_path: Path) -> None:
    finished, partial, resumable, empty = (tmp_path / name for name in ("finished", "partial", "resumable", "empty"))
    write_history(finished, [0.5, 0.6, 0.7])
    write_history(partial, [0.5, 0.6], finished=False)
    write_history(resumable, [0.5, 0.6], finished=False)
    (resumable / "checkpoints").mkdir()
    write_checkpoint(resumable / "checkpoints" / "last.ckpt")
    corrupt = tmp_path / "corrupt"
    write_history(corrupt, [0.5], finished=False)
    (corrupt / "checkpoints").mkdir()
    (corrupt / "checkpoints" / "last.ckpt").write_bytes(b"x")  # truncated: no zip archive
    empty.mkdir()
    assert task_run_state(finished) == "finished"
    assert task_run_state(resumable) == "resume"
    assert task_run_state(corrupt) == "failed"
    assert task_run_state(partial) == "start"  # killed before its first checkpoint: --ckpt_path=last starts afresh
    assert task_run_state(empty) == "start"
    assert task_run_state(tmp_path / "missing") == "start"


def test_run_skips_finished_resumes_interrupted_and_starts_the_rest(tmp_path: Path) -> None:
    experiment = read_experiment(make_experiment(tmp_path, with_vae=False))
    write_history(experiment.run_folder("base", 0), [0.5, 0.6, 0.7])
    interrupted = experiment.run_folder("base", 1)
    write_history(interrupted, [0.5], finished=False)
    (interrupted / "checkpoints").mkdir()
    write_checkpoint(interrupted / "checkpoints" / "last.ckpt")
    fake, lines = FakeTrain(), []
    run_experiment(experiment, select_jobs(experiment), launcher=["fake"], log=lines.append, runner=fake)

    assert run_commands(fake) == ["base/seed_1", "base_vae/seed_0", "base_vae/seed_1"]
    starts = [line for line in lines if line.startswith("[") and ": done in " not in line]
    assert [line.split(":")[1].split()[0] for line in starts] == ["skipped", "resumed", "started", "started"]
    # Each run says when it is done, how long it took and where its curve ended; then how many jobs are left.
    done = [line for line in lines if ": done in " in line]
    assert [line.split(":")[0] for line in done] == ["[1] base seed 1", "[2] base_vae seed 0", "[3] base_vae seed 1"]
    assert all(line.endswith(f"; {experiment.metric} 0.7000 at {LABELS[2]} labels") for line in done), done
    progress = [line for line in lines if " jobs done" in line]
    assert [line.split(",")[0] for line in progress] == ["2 of 4 jobs done", "3 of 4 jobs done", "4 of 4 jobs done"]
    assert "left" in progress[0] and "left" not in progress[-1]
    resumed = fake.commands[0]
    assert resumed[:4] == ["fake", "fit", "--config", str(tmp_path / "configs" / "base.yaml")]
    assert argument(resumed, "--seed_everything") == "1" and argument(resumed, "--data.pool_seed") == "1"
    assert argument(resumed, "--trainer.logger.init_args.save_dir") == str(tmp_path / "runs")
    assert argument(resumed, "--ckpt_path") == "last"
    assert resumed[-1] == "--trainer.max_epochs=3"  # the experiment's overrides come last

    fake_again, lines = FakeTrain(), []
    run_experiment(experiment, select_jobs(experiment), launcher=["fake"], log=lines.append, runner=fake_again)
    assert fake_again.commands == [] and all("skipped" in line for line in lines)


def test_vae_is_trained_once_and_only_for_variants_that_read_it(tmp_path: Path) -> None:
    experiment = read_experiment(make_experiment(tmp_path))
    assert experiment.vae is not None
    assert experiment.vae.checkpoint == tmp_path / "runs" / "vae_toy" / "seed_0" / "checkpoints" / "last.ckpt"

    fake = FakeTrain()
    run_experiment(experiment, select_jobs(experiment, variants=["base"]), launcher=["fake"], log=print, runner=fake)
    assert run_commands(fake) == ["base/seed_0", "base/seed_1"]  # the baseline never reads the VAE

    fake = FakeTrain()
    run_experiment(experiment, select_jobs(experiment), launcher=["fake"], log=print, runner=fake)
    assert run_commands(fake) == ["vae", "base_vae/seed_0", "base_vae/seed_1"]
    assert fake.commands[0][-1] == "--trainer.max_epochs=3"
    assert not any("--ckpt_path" in command for commands in fake.commands for command in commands)  # all fresh

    for folder in (experiment.run_folder("base_vae", 0), experiment.run_folder("base_vae", 1)):
        unfinish(folder)
    fake = FakeTrain()
    run_experiment(experiment, select_jobs(experiment), launcher=["fake"], log=print, runner=fake)
    assert run_commands(fake) == ["base_vae/seed_0", "base_vae/seed_1"]  # finished VAE: not retrained

    write_vae_checkpoint(experiment.vae.folder, epochs_done=1, max_epochs=2)  # killed after one of two epochs
    assert vae_run_state(experiment.vae) == "resume"
    lines: list[str] = []
    fake = FakeTrain()
    run_experiment(experiment, select_jobs(experiment, index=2), launcher=["fake"], log=lines.append, runner=fake)
    assert run_commands(fake) == []  # a finished job needs no VAE
    unfinish(experiment.run_folder("base_vae", 0))
    with pytest.raises(ValueError, match="experiment.py vae --config"):  # array tasks must not train it side by side
        run_experiment(
            experiment, select_jobs(experiment, index=2), train_vae=False, launcher=["fake"], log=print, runner=fake
        )
    run_experiment(experiment, select_jobs(experiment, index=2), launcher=["fake"], log=lines.append, runner=fake)
    assert run_commands(fake) == ["vae", "base_vae/seed_0"]
    expected = (
        "vae: resumed",
        "vae: done in",
        "[2] base_vae seed 0: started",
        "[2] base_vae seed 0: done in",
        "1 of 1",
    )
    assert all(line.startswith(start) for line, start in zip(lines[-5:], expected, strict=True)), lines


def test_dry_run_prints_commands_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeTrain()
    experiment = read_experiment(make_experiment(tmp_path))
    run_experiment(experiment, select_jobs(experiment, seeds=[1]), dry_run=True, launcher=["fake"], runner=fake)
    out = capsys.readouterr().out
    assert fake.commands == [] and not (tmp_path / "runs").exists()
    assert "vae: would be started" in out
    assert "fake fit --config " + str(tmp_path / "configs" / "base_vae.yaml") + " --seed_everything=1" in out


def test_failed_run_names_its_folder_and_output_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A real subprocess: a stand-in for train.py that fails for one variant.
    script = tmp_path / "fake_train.py"
    script.write_text(
        "import sys\n"
        "args = dict(a.split('=', 1) for a in sys.argv[1:] if '=' in a)\n"
        "print('training', args['--trainer.logger.init_args.name'])\n"
        "if args['--trainer.logger.init_args.name'].endswith('base_vae'):\n"
        "    print('CUDA error: out of memory', file=sys.stderr)\n"
        "    sys.exit(4)\n"
    )
    experiment = read_experiment(make_experiment(tmp_path, with_vae=False, seeds=[0]))
    with pytest.raises(RunFailed) as failure:
        run_experiment(experiment, select_jobs(experiment), launcher=[sys.executable, str(script)], log=print)
    message = str(failure.value)
    folder = experiment.run_folder("base_vae", 0)
    assert "exit code 4" in message and str(folder) in message and message.endswith("CUDA error: out of memory")
    log = (folder / "train.log").read_text()
    assert "training toy/base_vae" in log and "CUDA error: out of memory" in log
    assert "training toy/base\n" in (experiment.run_folder("base", 0) / "train.log").read_text()


def test_a_run_waiting_for_labels_is_reported_and_the_runner_goes_on(tmp_path: Path) -> None:
    """train.py's exit status 3 (a human oracle's open query) is no failure: the next job still runs."""
    script = tmp_path / "fake_train.py"
    script.write_text(
        "import sys\n"
        "args = dict(a.split('=', 1) for a in sys.argv[1:] if '=' in a)\n"
        "if args['--trainer.logger.init_args.name'].endswith('base'):\n"
        "    print('Round 1 waits for labels: fill in query_round_1.csv', file=sys.stderr)\n"
        "    sys.exit(3)\n"
    )
    experiment = read_experiment(make_experiment(tmp_path, with_vae=False, seeds=[0]))
    lines: list[str] = []
    summary = run_experiment(
        experiment, select_jobs(experiment), launcher=[sys.executable, str(script)], log=lines.append
    )
    assert [word for _, word in summary.actions] == ["waiting for labels", "started"]
    assert any("waits for an expert's labels" in line and "Round 1 waits for labels" in line for line in lines)


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"seeds": None}, ValueError, r"missing key\(s\) \['seeds'\]"),
        ({"baseline": "random"}, ValueError, "baseline 'random' is not a variant"),
        ({"variants": {"base": "configs/base.yaml", "other": "x.yaml"}}, FileNotFoundError, "'other'.*does not exist"),
        ({"vae_overrides": ["--ckpt_path=none"]}, ValueError, "'vae_overrides' sets --ckpt_path"),
        ({"budget": 3}, ValueError, r"unknown key\(s\) \['budget'\]"),
        ({"seeds": [0, 0]}, ValueError, "repeats a seed"),
        ({"seeds": "0-4"}, ValueError, "list of non-negative integers"),
        ({"overrides": ["--data.pool_seed=3"]}, ValueError, "sets --data.pool_seed, which the runner sets"),
        ({"overrides": ["--config", "configs/base.yaml"]}, ValueError, "sets --config, which the runner sets"),
        ({"overrides": "--trainer.devices=4"}, ValueError, "must be a list of train.py arguments"),
        ({"vae": "nowhere/vae.yaml"}, FileNotFoundError, "VAE config nowhere/vae.yaml does not exist"),
        ({"variants": {"base": "configs/base.yaml"}}, ValueError, "at least two variants"),
    ],
)
def test_bad_experiment_configs_fail_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, object], error: type, message: str
) -> None:
    monkeypatch.chdir(tmp_path)  # relative config paths start from the working directory
    path = make_experiment(tmp_path, **changes)
    with pytest.raises(error, match=message) as raised:
        read_experiment(path)
    assert "\n" not in str(raised.value)


def test_several_vaes_each_trained_only_for_the_variants_that_read_it(tmp_path: Path) -> None:
    """The future-work comparison: one experiment, the paper's VAE and a second one, variants reading either, and a
    variant with arguments of its own."""
    root = tmp_path / "runs"
    configs = tmp_path / "configs"
    path = make_experiment(tmp_path)
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger"}
    logger["init_args"] = {"save_dir": str(root), "name": "vae_other", "version": "seed_0"}
    write_config(configs / "vae_other.yaml", "vae_tiny.yaml", trainer={"max_epochs": 2, "logger": logger})
    other_checkpoint = root / "vae_other" / "seed_0" / "checkpoints" / "last.ckpt"
    coreset = {"class_path": "CoreSet", "init_args": {"features": {"vae": {"checkpoint": str(other_checkpoint)}}}}
    write_config(configs / "base_other.yaml", "task_tiny.yaml", active={"heuristic": coreset})
    content = yaml.safe_load(path.read_text())
    content["vae"] = [str(configs / "vae.yaml"), str(configs / "vae_other.yaml")]
    content["variants"]["base_other"] = str(configs / "base_other.yaml")
    content["variants"]["base_budget"] = {"configs": [str(configs / "base.yaml")], "overrides": ["--active.budget=30"]}
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    experiment = read_experiment(path)
    assert [v.uses_vae for v in experiment.variants.values()] == [False, True, True, False]
    assert [vae.folder.name for vae in experiment.vaes_for(experiment.variants["base_other"])] == ["seed_0"]
    assert experiment.vaes_for(experiment.variants["base_other"])[0].checkpoint == other_checkpoint

    fake, lines = FakeTrain(), []
    run_experiment(experiment, select_jobs(experiment, variants=["base_other"]), launcher=["fake"], log=lines.append,
                   runner=fake)  # fmt: skip
    first = fake.commands[0]
    assert first[first.index("--config") + 1] == str(configs / "vae_other.yaml")
    assert run_commands(fake) == ["vae", "base_other/seed_0", "base_other/seed_1"]  # the other VAE only
    assert lines[0].startswith("vae vae_other: started")
    fake = FakeTrain()
    run_experiment(experiment, select_jobs(experiment, variants=["base_budget"], seeds=[0]), launcher=["fake"],
                   log=print, runner=fake)  # fmt: skip
    assert fake.commands[0][-2:] == ["--trainer.max_epochs=3", "--active.budget=30"]  # the variant's come last

    # A variant's own overrides may not change what the runner sets either, nor name an option train.py lacks.
    content["variants"]["base_budget"]["overrides"] = ["--seed_everything=7"]
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    with pytest.raises(ValueError, match="variant 'base_budget': .*sets --seed_everything, which the runner sets"):
        read_experiment(path)
    content["variants"]["base_budget"]["overrides"] = ["--data.pool_sed=3"]
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    with pytest.raises(ValueError, match="variant 'base_budget': unrecognized arguments: --data.pool_sed=3") as raised:
        read_experiment(path)
    assert "\n" not in str(raised.value)


def test_vae_checkpoint_mismatch_and_missing_file_are_reported(tmp_path: Path) -> None:
    path = make_experiment(tmp_path)
    vae_config = tmp_path / "configs" / "vae.yaml"
    vae_config.write_text(vae_config.read_text().replace("version: seed_0", "version: seed_9"))
    with pytest.raises(ValueError, match="reads the VAE checkpoint .* but .*vae.yaml writes .*seed_9"):
        read_experiment(path)
    with pytest.raises(FileNotFoundError, match="experiment config .*absent.yaml does not exist"):
        read_experiment(tmp_path / "absent.yaml")


def test_shipped_experiment_configs_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPOSITORY)
    paths = sorted(Path("configs/experiments").glob("*.yaml"))
    assert len(paths) == 23
    for path in paths:
        experiment = read_experiment(path)
        assert experiment.name == path.stem and experiment.baseline in experiment.variants
        # The VAE variants read a checkpoint one of the experiment's VAE configs writes (checked by read_experiment);
        # the label-aware VAE trains inside its runs and reads none; an experiment without such variants needs none.
        reads = [
            any(word in name for word in ("vae", "mixture", "_start", "contrastive")) for name in experiment.variants
        ]
        assert experiment.vae is not None or not any(reads), path
        assert [v.uses_vae for v in experiment.variants.values()] == reads, path
        for variant in experiment.variants.values():
            assert [vae.config.stem for vae in experiment.vaes_for(variant)] == (
                [f"vae_{path.stem.split('_')[0]}_mixture"]
                if "mixture" in variant.name
                else [f"contrastive_{path.stem.split('_')[0]}"]
                if "contrastive" in variant.name
                else [f"vae_{path.stem.split('_')[0]}"]
                if variant.uses_vae
                else []
            ), (path, variant.name)
    # A variant of several configs passes them in order, as train.py merges them.
    experiment = read_experiment("configs/experiments/digits_baselines.yaml")
    bald = next(job for job in expand_jobs(experiment) if job.variant.name == "bald")
    command = jobs.task_command(experiment, bald, ["train.py"])
    configs = [command[i + 1] for i, argument in enumerate(command) if argument == "--config"]
    assert configs == ["configs/digits_entropy.yaml", "configs/heuristics/bald.yaml"]


#: The heuristic each variant name stands for in the shipped experiments.
VARIANT_HEURISTICS = {
    "random": "RandomSampling",
    "entropy": "Entropy",
    "margin": "Margin",
    "least_confidence": "LeastConfidence",
    "bald": "BALD",
    "badge": "BADGE",
    "coreset": "CoreSet",
    "medal": "MedAL",
    "lossnet": "LearningLoss",
    "typiclust": "TypiClust",
    "probcover": "ProbCover",
}


def test_every_shipped_variant_composes_into_the_heuristic_it_is_named_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``train.py``'s parser makes of each variant's merged configs and overrides (the runner asks it when it
    reads the experiment): the right heuristic, and the settings it needs."""
    monkeypatch.chdir(REPOSITORY)
    for path in sorted(Path("configs/experiments").glob("*.yaml")):
        for variant in read_experiment(path).variants.values():
            assert variant.train_config is not None
            config = variant.train_config.as_dict()
            heuristic = config["active"]["heuristic"]
            kind = variant.name
            if kind.endswith("_balanced"):  # ClassBalanced around the heuristic the name gives
                assert heuristic["class_path"].endswith("ClassBalanced"), (path, variant.name)
                heuristic = heuristic["init_args"]["heuristic"]
                kind = kind.removesuffix("_balanced")
            if "_nearest" in kind:  # NearestCandidates around the heuristic the name gives; "_vae": V(u) neighbours
                assert heuristic["class_path"].endswith("NearestCandidates"), (path, variant.name)
                encoder = heuristic["init_args"].get("encoder") or {}
                assert bool(encoder.get("init_args", encoder).get("checkpoint")) == kind.endswith("_nearest_vae")
                heuristic = heuristic["init_args"]["heuristic"]
                kind = kind.split("_nearest")[0]
            if kind.endswith("_typiclust_start"):  # a cold start: TypiClust on the VAE features alone picks first
                start = config["active"]["start"]
                start_features = start["init_args"]["features"]["init_args"]
                assert start["class_path"].endswith("TypiClust") and start_features["task_weight"] == 0.0
                assert start_features["vae"]["init_args"]["checkpoint"]
                kind = kind.removesuffix("_typiclust_start")
            else:
                assert config["active"]["start"] is None, (path, variant.name)
            for suffix in ("_vae", "_vae_only", "_mixture", "_label_aware", "_contrastive", "_contrastive_only"):
                kind = kind.removesuffix(suffix)
            expected = VARIANT_HEURISTICS[kind]
            assert heuristic["class_path"].rsplit(".", 1)[-1] == expected, (path, variant.name)
            features = (heuristic.get("init_args") or {}).get("features") or {}  # None: the task features alone
            features = features.get("init_args", features)
            vae = features.get("vae") or {}
            checkpoint = vae.get("init_args", vae).get("checkpoint")
            # The wrapped heuristic's settings are the unwrapped one's.
            name = variant.name.removesuffix("_balanced").split("_nearest")[0]
            on_encoder = name.endswith(("_vae", "_contrastive"))
            if name.endswith(("_vae_only", "_contrastive_only")) or (
                expected in ("TypiClust", "ProbCover") and on_encoder
            ):
                assert features["task_weight"] == 0.0 and checkpoint
            elif expected in ("TypiClust", "ProbCover"):  # on the task features, as configs/heuristics/typiclust.yaml
                assert features.get("task_weight", 1.0) == 1.0 and not checkpoint, (path, variant.name)
            elif expected in ("CoreSet", "MedAL"):
                assert features.get("task_weight", 1.0) == 1.0
                assert bool(checkpoint) == name.endswith(("_vae", "_mixture", "_contrastive")), (path, variant.name)
                if variant.name.endswith("_label_aware"):
                    assert vae["class_path"].endswith("LabelAwareVAEFeatures")
            head_vae = config["model"]["init_args"].get("vae") or {}
            if expected == "LearningLoss" and name != "lossnet":
                assert head_vae["class_path"].endswith(
                    "LabelAwareVAEFeatures" if variant.name.endswith("_label_aware") else ".VAEFeatures"
                ), (path, variant.name)
                assert bool(head_vae["init_args"].get("checkpoint")) == variant.name.endswith(("_vae", "_mixture"))
            assert (config["model"]["init_args"]["dropout"] > 0) == (expected == "BALD"), (path, variant.name)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_list_and_run_one_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_experiment(tmp_path, with_vae=False)
    assert experiment_main(["list", "--config", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "    3  base_vae                1  start" in listing and "--array=0-3" in listing

    fake = FakeTrain()
    monkeypatch.setattr(execution, "run_process", fake)
    assert experiment_main(["run", "--config", str(path), "--index", "2"]) == 0
    assert run_commands(fake) == ["base_vae/seed_0"]
    assert argument(fake.commands[0], "--seed_everything") == "0"
    assert "started" in capsys.readouterr().out

    fake.fail_variant = "base"
    assert experiment_main(["run", "--config", str(path), "--variant", "base"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: [0] base seed 0 failed with exit code 1") and error.rstrip().endswith("diverged")
    assert experiment_main(["run", "--config", str(path), "--index", "9"]) == 2
    assert "out of range" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- report
def test_report_writes_curves_tables_and_scipy_pvalues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_experiment(tmp_path, with_vae=False, seeds=[0, 1, 2, 3, 4])
    experiment = read_experiment(path)
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.8, size=(5, len(LABELS)))
    other = base + rng.normal(0.02, 0.01, size=base.shape)
    for seed in range(5):
        write_history(experiment.run_folder("base", seed), base[seed])
        write_history(experiment.run_folder("base_vae", seed), other[seed])
    write_history(experiment.folder / "stale_variant" / "seed_0", [0.1, 0.1, 0.1])  # not in the config: left out

    assert experiment_main(["report", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    report = experiment.report_folder
    for metric in ("val_accuracy", "test_accuracy", "val_auroc", "test_auroc"):
        png = (report / f"curves_{metric}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 5000
        assert (report / f"comparison_{metric}.md").stat().st_size > 0
    assert "stale_variant" not in (report / "report.md").read_text()
    assert list(report.glob("events.out.tfevents.*"))

    with (report / "comparison_test_accuracy.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["labels"]) for row in rows] == LABELS
    markdown = (report / "comparison_test_accuracy.md").read_text()
    assert markdown in printed
    for column, row in enumerate(rows):
        t_expected = stats.ttest_rel(other[:, column], base[:, column]).pvalue
        w_expected = stats.wilcoxon(other[:, column] - base[:, column]).pvalue
        assert math.isclose(float(row["t_pvalue"]), t_expected, rel_tol=1e-6)
        assert math.isclose(float(row["wilcoxon_pvalue"]), w_expected, rel_tol=1e-6)
        assert float(row["variant_mean"]) == pytest.approx(other[:, column].mean(), rel=1e-6)
        table_line = next(line for line in markdown.splitlines() if line.startswith(f"| {LABELS[column]} |"))
        t_text = f"{t_expected:.2e}" if t_expected < 1e-3 else f"{t_expected:.3f}"
        assert (f"**{t_text}**" if t_expected < 0.05 else t_text) in table_line

    # Without a config: every variant in the folder, and the baseline must be named.
    assert experiment_main(["report", "--folder", str(experiment.folder)]) == 2
    assert "--folder needs --baseline" in capsys.readouterr().err
    out = tmp_path / "all"
    assert experiment_main(["report", "--folder", str(experiment.folder), "--baseline", "base", "--out", str(out)]) == 0
    assert "stale_variant" in (out / "comparison_test_accuracy.md").read_text()


# ----------------------------------------------------------------------------------------------- t-SNE
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished one-round digits task run (50 labels, 1 epoch, the tests' narrow ResNet-18) and a digits VAE trained
    for 1 epoch on 256 images, in-process."""
    from alvae_pl.cli import main as train_main

    root = tmp_path_factory.mktemp("tsne")
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    where = [f"--trainer.logger.init_args.save_dir={root}"]
    vae_config = str(REPOSITORY / "configs" / "vae_digits.yaml")
    train_main(["fit", "--config", vae_config, "--trainer.max_epochs=1", "--data.pool_size=256", *where, *quiet])
    config = str(REPOSITORY / "configs" / "digits_coreset.yaml")
    single_round = ["--data.initial_labels=50", "--active.max_labels=50", "--active.epochs_first=1"]
    train_main(["fit", "--config", config, *TINY, *single_round, *where, *quiet])
    return root / "digits_coreset" / "seed_0", root / "vae_digits" / "seed_0" / "checkpoints" / "last.ckpt"


def test_tsne_figure_of_both_selections(
    tiny_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, vae = tiny_runs
    out = tmp_path / "figure" / "tsne.png"
    arguments = ["--fraction", "0.2", "--select", "20", "--out", str(out), "--threads", "1"]
    assert experiment_main(["tsne", "--run", str(run), "--vae", str(vae), *arguments]) == 0
    printed = capsys.readouterr().out
    assert "Figure: " + str(out) in printed
    counts = re.search(r"(\d+) labeled; (\d+) of (\d+) unlabeled as candidates", printed)
    assert counts is not None
    num_labeled, num_candidates, num_unlabeled = map(int, counts.groups())
    assert num_labeled == 50 and num_candidates == round(0.2 * num_unlabeled)
    png = out.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10000
    assert list(out.parent.glob("events.out.tfevents.*"))

    with out.with_suffix(".csv").open(newline="") as handle:
        points = list(csv.DictReader(handle))
    labeled = {row["pool_index"] for row in points if row["role_task_features"] == "labeled"}
    assert len(labeled) == 50  # the run's labeled set
    with (run / "labeled.csv").open(newline="") as handle:
        assert labeled == {row["pool_index"] for row in csv.DictReader(handle)}
    assert len(points) == num_labeled + num_candidates
    for column in ("role_task_features", "role_task_vae_features"):
        selected = [row["pool_index"] for row in points if row[column] == "selected"]
        assert len(selected) == len(set(selected)) == 20
        assert not labeled & set(selected)
        assert {row["pool_index"] for row in points if row[column] == "labeled"} == labeled


def test_tsne_rejects_an_unfinished_run(tiny_runs: tuple[Path, Path], tmp_path: Path) -> None:
    from alvae_pl.finished_run import load_finished_run

    run, _ = tiny_runs
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    checkpoint["callbacks"]["ActiveLearningLoop"]["finished"] = False
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "config.yaml").write_text((run / "config.yaml").read_text())
    torch.save(checkpoint, unfinished / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match="is not finished .*--active.max_labels=1000"):
        load_finished_run(unfinished)
    with pytest.raises(FileNotFoundError, match="config.yaml is missing"):
        load_finished_run(tmp_path / "nothing")
