"""Experiments across devices and machines: the local GPU spread (``experiment.py run --gpus``, with CPU stand-ins for
devices) and the SLURM submission through submitit (its local executor, and a stand-in ``sbatch``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from alvae_pl.experiments import slurm as slurm_submission
from alvae_pl.experiments.cli import main as experiment_main
from alvae_pl.experiments.device_pool import DEVICE_VARIABLE, Device, parse_devices, run_on_devices
from alvae_pl.experiments.execution import Interrupted, ProcessResult, run_experiment
from alvae_pl.experiments.experiment import Experiment, read_experiment
from alvae_pl.experiments.jobs import select_jobs, task_run_state
from alvae_pl.experiments.slurm import SlurmOptions, make_executor, submit_experiment, wait_for
from tests.helpers.cli_runs import read_csv, without_timings
from tests.test_experiment_runner import make_experiment

# A stand-in for train.py: finds its run folder as train.py would (the config's logger, then the arguments), appends
# one JSON line (device, start and end times) to <folder>/launches.jsonl, and leaves what a finished run leaves. The
# variant "broken" exits 4, "expert" exits 3 (waiting for labels), a VAE config named "bad_vae.yaml" exits 5. With
# FAKE_SLEEP it sleeps that long, and on SIGTERM records it and exits 143.
FAKE_TRAIN = """\
import json, os, signal, sys, time, zipfile
from pathlib import Path
import yaml
arguments = sys.argv[2:]
config = yaml.safe_load(Path(arguments[arguments.index("--config") + 1]).read_text())
logger = dict(config["trainer"]["logger"]["init_args"])
for argument in arguments:
    key, _, value = argument.partition("=")
    if key.startswith("--trainer.logger.init_args."):
        logger[key.rsplit(".", 1)[1]] = value
folder = Path(logger["save_dir"]) / logger["name"] / logger["version"]
folder.mkdir(parents=True, exist_ok=True)
record = {"device": os.environ.get("ALVAE_DEVICE"), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
          "start": time.time(), "resume": "--ckpt_path=last" in arguments}
def write(**more):
    with open(folder / "launches.jsonl", "a") as handle:
        handle.write(json.dumps({**record, **more, "end": time.time()}) + "\\n")
def stop(signum, frame):
    write(signal=signum)
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
(folder / "ready").touch()
time.sleep(float(os.environ.get("FAKE_SLEEP", "0.3")))
name = logger["name"]
if name.endswith("/broken"):
    write(); print("ValueError: diverged"); sys.exit(4)
if name.endswith("/expert"):
    write(); print("Round 1 waits for labels: fill in query_round_1.csv"); sys.exit(3)
if Path(arguments[arguments.index("--config") + 1]).name == "bad_vae.yaml":
    write(); print("RuntimeError: NaN loss"); sys.exit(5)
(folder / "checkpoints").mkdir(exist_ok=True)
with zipfile.ZipFile(folder / "checkpoints" / "last.ckpt", "w") as archive:
    archive.writestr("archive/data.pkl", b"")
(folder / "run_status.json").write_text(json.dumps({"status": "finished"}))
write()
"""


def fake_launcher(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return [sys.executable, str(script)]


def launches(folder: Path) -> list[dict]:
    path = folder / "launches.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def add_variants(path: Path, **variants: str) -> None:
    """Adds variants (names -> the config of an existing variant) to an experiment file."""
    content = yaml.safe_load(path.read_text())
    content["variants"].update({name: content["variants"][like] for name, like in variants.items()})
    path.write_text(yaml.safe_dump(content, sort_keys=False))


# --------------------------------------------------------------------------------------------- devices
def test_devices_are_cuda_indices_as_this_process_sees_them_or_cpu_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert parse_devices("0,2") == [Device("0", "0"), Device("2", "2")]
    assert parse_devices("cpu:2") == [Device("cpu:0", ""), Device("cpu:1", "")]
    assert Device("cpu:1", "").environment() == {"CUDA_VISIBLE_DEVICES": "", DEVICE_VARIABLE: "cpu:1"}
    # Inside an allocation that narrowed the GPUs (SLURM sets CUDA_VISIBLE_DEVICES), index k is its k-th entry.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert parse_devices("1") == [Device("1", "7")]
    assert parse_devices("all") == [Device("0", "5"), Device("1", "7")]
    for text, message in [
        ("0,0", "repeats a device"),
        ("0,x", "CUDA device indices separated by commas"),
        ("cpu:0", "cpu:N with N >= 1"),
        ("2", r"sees 2 GPU\(s\).*use indices 0..1"),
    ]:
        with pytest.raises(ValueError, match=message) as raised:
            parse_devices(text)
        assert "\n" not in str(raised.value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="shows no GPU"):
        parse_devices("all")


# -------------------------------------------------------------------------------------- the local spread
def test_spread_runs_encoders_first_pins_each_job_and_fills_no_more_slots_than_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs long enough that a loaded machine starts the baseline's process while the VAE still trains.
    monkeypatch.setenv("FAKE_SLEEP", "3")
    experiment = read_experiment(make_experiment(tmp_path))  # base, base_vae (reads the VAE) x seeds 0, 1
    launcher, lines = fake_launcher(tmp_path), []
    outcomes = run_on_devices(
        experiment, select_jobs(experiment), parse_devices("cpu:2"), launcher=launcher, log=lines.append
    )
    assert [outcome.word for outcome in outcomes] == ["done"] * 5
    assert experiment.vae is not None
    vae = launches(experiment.vae.folder)
    runs = {(variant, seed): launches(experiment.run_folder(variant, seed)) for variant in ("base", "base_vae")
            for seed in (0, 1)}  # fmt: skip
    assert len(vae) == 1 and all(len(records) == 1 for records in runs.values())  # every job ran once
    everything = vae + [records[0] for records in runs.values()]
    for record in everything:  # pinned to its slot: no GPU visible, the slot named
        assert record["cuda"] == "" and record["device"] in ("cpu:0", "cpu:1")
    for seed in (0, 1):  # the VAE's readers started after it ended; the baseline did not wait for it
        assert runs[("base_vae", seed)][0]["start"] >= vae[0]["end"]
    assert min(runs[("base", seed)][0]["start"] for seed in (0, 1)) < vae[0]["end"]
    # Never more runs at once than slots, and the two slots were used side by side.
    moments = sorted([(record["start"], 1) for record in everything] + [(record["end"], -1) for record in everything])
    running, most = 0, 0
    for _, change in moments:
        running += change
        most = max(most, running)
    assert most == 2
    devices = {record["device"] for record in everything}
    assert devices == {"cpu:0", "cpu:1"}
    assert any(line.startswith("[3] base_vae seed 1: started on device cpu:") for line in lines)

    # A second call skips every finished job and starts nothing.
    again = run_on_devices(experiment, select_jobs(experiment), parse_devices("cpu:2"), launcher=launcher, log=print)
    assert [outcome.word for outcome in again] == ["skipped (finished)"] * 4  # the VAE is not even considered
    assert all(len(launches(experiment.run_folder(v, s))) == 1 for v in ("base", "base_vae") for s in (0, 1))


def test_spread_reports_failures_and_waiting_runs_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_experiment(tmp_path, seeds=[0])
    add_variants(path, broken="base", expert="base")
    configs = tmp_path / "configs"
    (configs / "bad_vae.yaml").write_text((configs / "vae.yaml").read_text())
    content = yaml.safe_load(path.read_text())
    content["vae"] = str(configs / "bad_vae.yaml")
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    monkeypatch.setattr("alvae_pl.experiments.device_pool.default_launcher", lambda: fake_launcher(tmp_path))

    assert experiment_main(["run", "--config", str(path), "--gpus", "cpu:2", "--echo"]) == 2
    assert "--echo would interleave runs side by side" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before anything ran
    assert experiment_main(["run", "--config", str(path), "--gpus", "cpu:2", "--jobs-per-gpu", "2"]) == 1
    out, err = capsys.readouterr()
    table = out[out.index("job ") :].splitlines()
    rows = {line.split("  ")[0].strip(): line for line in table[1:]}
    assert "failed (exit 5)" in rows["vae"] and "NaN loss" in rows["vae"]
    assert "done" in rows["[0] base seed 0"]
    assert "not started: vae failed" in rows["[1] base_vae seed 0"]
    assert "failed (exit 4)" in rows["[2] broken seed 0"] and "diverged" in rows["[2] broken seed 0"]
    assert "waiting for labels" in rows["[3] expert seed 0"] and "query_round_1.csv" in rows["[3] expert seed 0"]
    experiment = read_experiment(path)
    assert launches(experiment.run_folder("base_vae", 0)) == []  # never started
    assert err.startswith("error: 3 of 5 jobs failed or could not start (")
    assert all(name in err for name in ("vae", "[1] base_vae seed 0", "[2] broken seed 0")) and "expert" not in err
    assert "\n" not in err.strip()


def test_sigterm_reaches_every_running_job_and_nothing_new_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = read_experiment(make_experiment(tmp_path, with_vae=False, seeds=[0, 1, 2]))
    monkeypatch.setenv("FAKE_SLEEP", "60")
    folders = [job.folder for job in select_jobs(experiment)]
    started = time.monotonic()

    def stop_when_two_run() -> None:
        while sum((folder / "ready").is_file() for folder in folders) < 2:  # both handle SIGTERM
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_two_run, daemon=True).start()
    lines: list[str] = []
    with pytest.raises(Interrupted, match="stopped by SIGTERM.*run the same command again"):
        run_on_devices(experiment, select_jobs(experiment), parse_devices("cpu:2"), launcher=fake_launcher(tmp_path),
                       log=lines.append)  # fmt: skip
    assert time.monotonic() - started < 30  # the 60 s runs stopped
    records = [launches(folder) for folder in folders]
    assert [len(r) for r in records] == [1, 1, 0, 0, 0, 0]  # the two running stopped, nothing else started
    assert all(r[0]["signal"] == signal.SIGTERM for r in records[:2])
    rows = lines[-1].splitlines()[1:]  # the table of outcomes
    assert [bool(re.search(r" cpu:\d +stopped ", row)) for row in rows] == [True] * 2 + [False] * 4
    assert all(re.search(r" - +not started: stopped before it started", row) for row in rows[2:])


# ------------------------------------------------------------------------------------------------- SLURM
def test_slurm_submission_sets_dependencies_on_the_encoders_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a stand-in ``sbatch`` that records each script and answers a job id: the VAE is submitted alone, the
    runs that read it as an array after it, the baseline as an array with no dependency; finished runs not at all."""
    bin_folder, scripts = tmp_path / "bin", tmp_path / "sbatch_scripts"
    bin_folder.mkdir()
    scripts.mkdir()
    sbatch = bin_folder / "sbatch"
    sbatch.write_text(
        "#!/bin/sh\n"
        f'count=$(ls {scripts} | wc -l); number=$((4100 + count))\ncp "$1" {scripts}/$number.sh\n'
        'echo "Submitted batch job $number"\n'
    )
    (bin_folder / "srun").write_text("#!/bin/sh\nexit 0\n")
    for program in (sbatch, bin_folder / "srun"):
        program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    path = make_experiment(tmp_path, seeds=[0, 1, 2])
    experiment = read_experiment(path)
    (experiment.run_folder("base", 2) / "checkpoints").mkdir(parents=True)
    (experiment.run_folder("base", 2) / "run_status.json").write_text('{"status": "finished"}')

    options = SlurmOptions(partition="gpu", time_minutes=120, account="lab", extra={"qos": "high"})
    executor = make_executor(experiment.folder / "slurm", options)
    lines: list[str] = []
    submitted = submit_experiment(experiment, select_jobs(experiment), executor, launcher=["train"], log=lines.append)
    assert [item.what for item in submitted] == [
        "vae", "[0] base seed 0", "[1] base seed 1", "[3] base_vae seed 0", "[4] base_vae seed 1", "[5] base_vae seed 2"
    ]  # fmt: skip
    assert "[2] base seed 2: skipped (finished)" in lines[0]
    texts = [path.read_text() for path in sorted(scripts.iterdir())]
    assert len(texts) == 3  # the VAE, an array of the baseline's two runs, an array of the three VAE readers
    vae_script, base_array, reader_array = texts
    for text in texts:
        for option in ("--partition=gpu", "--time=120", "--account=lab", "--qos=high", "--gpus-per-node=1",
                       "--kill-on-invalid-dep=yes", f"--output={experiment.folder / 'slurm'}"):  # fmt: skip
            assert f"#SBATCH {option}" in text, (option, text)
    assert "--dependency" not in vae_script and "--dependency" not in base_array
    assert "#SBATCH --array=0-1" in base_array and "#SBATCH --array=0-2" in reader_array
    assert "#SBATCH --dependency=afterok:4100\n" in reader_array
    assert submitted[0].job.job_id == "4100" and submitted[3].job.job_id == "4102_0"
    assert lines[-1].startswith("[5] base_vae seed 2: submitted as job 4102_2 after job 4100")

    with pytest.raises(ValueError, match="not trained yet.*experiment.py vae"):  # an array task may not train it
        submit_experiment(experiment, select_jobs(experiment, index=3), executor, train_vae=False, launcher=["t"])
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="sbatch is not on the PATH"):
        make_executor(experiment.folder / "slurm", options)


# ------------------------------------------------------------------------ real runs against a sequential one
def in_process_runner(command: Sequence[str], log_path: Path, echo: bool) -> ProcessResult:
    """Runs ``train.py fit ...`` in this process (the sequential runner's ``runner``; saves a new interpreter's
    imports per run)."""
    from alvae_pl.cli import main

    returncode = 0
    try:
        main(list(command))
    except SystemExit as exit_:
        returncode = int(exit_.code or 0)
    return ProcessResult(returncode, "")


#: The tiny experiment's VAE for one epoch on 300 images: these tests compare records, not what the VAE learns.
SMALL_VAE = ["--trainer.max_epochs=1", "--data.pool_size=300"]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    """The tiny experiment (the VAE, base and base_vae x seeds 0 and 1) run one job after the other."""
    tmp_path = tmp_path_factory.mktemp("sequential")
    experiment = read_experiment(make_experiment(tmp_path, vae_overrides=SMALL_VAE))
    run_experiment(experiment, select_jobs(experiment), launcher=[], log=print, runner=in_process_runner)
    return experiment


def assert_same_records(experiment: Experiment, reference: Experiment, seeds: Sequence[int]) -> None:
    for variant in ("base", "base_vae"):
        for seed in seeds:
            folder, expected = experiment.run_folder(variant, seed), reference.run_folder(variant, seed)
            assert task_run_state(folder) == "finished"
            for name in ("history.csv", "labeled.csv"):
                assert without_timings(read_csv(folder / name)) == without_timings(read_csv(expected / name)), (
                    variant, seed, name
                )  # fmt: skip


@pytest.mark.slow
def test_spread_over_two_cpu_slots_records_what_a_sequential_run_records(
    sequential: Experiment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_experiment(tmp_path, vae_overrides=SMALL_VAE)
    assert experiment_main(["run", "--config", str(path), "--gpus", "cpu:2"]) == 0
    experiment = read_experiment(path)
    assert_same_records(experiment, sequential, seeds=[0, 1])
    for variant in ("base", "base_vae"):
        for seed in (0, 1):
            log = (experiment.run_folder(variant, seed) / "train.log").read_text()
            assert f"CUDA_VISIBLE_DEVICES='' {DEVICE_VARIABLE}=cpu:" in log  # the device heads the run's log
    out = capsys.readouterr().out
    assert out.count(": done after ") == 5 and len(re.findall(r" cpu:\d +done ", out)) == 5
    assert experiment_main(["run", "--config", str(path), "--gpus", "cpu:2"]) == 0
    assert capsys.readouterr().out.count("skipped (finished)") == 8  # each job's line and its row in the table


@pytest.mark.slow
def test_slurm_local_executor_records_what_a_sequential_run_records(
    sequential: Experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """submitit's local executor runs the submitted jobs as this machine's processes: the VAE, then the runs."""
    path = make_experiment(tmp_path, seeds=[0], vae_overrides=SMALL_VAE)
    monkeypatch.setattr(slurm_submission, "CLUSTER", "local")
    assert experiment_main(["run", "--config", str(path), "--slurm", "--gpus-per-job", "0", "--time", "30"]) == 0
    out = capsys.readouterr().out
    experiment = read_experiment(path)
    assert_same_records(experiment, sequential, seeds=[0])
    assert "3 of 3 jobs done" in out and out.count("submitted as job ") == 3
    assert list((experiment.folder / "slurm").glob("*/*_log.out"))  # submitit's logs beside the runs
    # Submitting again finds every job finished.
    executor = make_executor(experiment.folder / "slurm", SlurmOptions(gpus_per_job=0), cluster="local")
    assert submit_experiment(experiment, select_jobs(experiment), executor, log=print) == []
    assert wait_for([]) == 0


def test_no_variant_may_take_the_slurm_log_folder(tmp_path: Path) -> None:
    path = make_experiment(tmp_path, with_vae=False)
    add_variants(path, slurm="base")
    with pytest.raises(ValueError, match="variant name 'slurm' must be a folder name other than 'report' or 'slurm'"):
        read_experiment(path)


@pytest.mark.slow  # the runner's own interpreter reads the experiment through train.py's parser: most of a minute here
def test_runs_end_with_a_runner_killed_by_sigkill(tmp_path: Path) -> None:
    """No run outlives its runner (it would keep training while a new runner resumes its folder): each child asks
    Linux for SIGTERM when the thread that started it ends, and a SIGKILLed runner's threads all end."""
    path = make_experiment(tmp_path, with_vae=False, seeds=[0, 1])
    runner = tmp_path / "runner.py"
    runner.write_text(
        "import sys\n"
        "from alvae_pl.experiments import read_experiment, select_jobs\n"
        "from alvae_pl.experiments.device_pool import parse_devices, run_on_devices\n"
        f"experiment = read_experiment({str(path)!r})\n"
        "run_on_devices(experiment, select_jobs(experiment), parse_devices('cpu:2'), launcher=sys.argv[1:])\n"
    )
    experiment = read_experiment(path)
    folders = [job.folder for job in select_jobs(experiment)]
    environment = dict(os.environ, FAKE_SLEEP="120", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    process = subprocess.Popen([sys.executable, str(runner), *fake_launcher(tmp_path)], env=environment)
    try:
        deadline = time.monotonic() + 120
        while sum((folder / "ready").is_file() for folder in folders) < 2:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.kill()
        process.wait()
        deadline = time.monotonic() + 30
        while sum(bool(launches(folder)) for folder in folders) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.kill()
    records = [launches(folder) for folder in folders]
    assert sum(len(r) for r in records) == 2  # the two running jobs ended, and nothing started after the runner died
    assert all(r[0]["signal"] == signal.SIGTERM for r in records if r)
