"""Running an experiment's jobs: skip finished runs, resume interrupted ones, start the rest, VAEs first."""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alvae_pl.analysis.history import load_history
from alvae_pl.cli import EXIT_WAITING_FOR_LABELS
from alvae_pl.experiments.experiment import Experiment, VaeRun
from alvae_pl.experiments.jobs import (
    STATE_WORDS,
    Job,
    RunState,
    task_command,
    task_run_state,
    vae_command,
    vae_run_state,
)
from alvae_pl.run_folder import HISTORY_FILENAME, LOG_FILENAME
from alvae_pl.run_lock import RunFolderBusy, live_owner

REPOSITORY = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPOSITORY / "train.py"
#: Lines of a failed run's output quoted in the error.
TAIL_LINES = 25
#: Training output of each run, appended to at every attempt, in the run folder.


class RunFailed(RuntimeError):
    """A ``train.py`` run exited with an error; the message names its folder and quotes its output's tail."""


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    tail: str


def run_process(
    command: Sequence[str],
    log_path: Path,
    echo: bool = False,
    *,
    environment: Mapping[str, str] | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> ProcessResult:
    """Run ``command``, appending its merged stdout/stderr to ``log_path`` (and to our stdout with ``echo``).

    Read as bytes so that progress bars' carriage returns pass through unchanged; the tail keeps the last
    64 KiB for the error message. ``environment`` adds variables to the child's (e.g. the device it is pinned to;
    they head its line in the log); ``on_start`` receives the child once it runs (a scheduler that passes signals
    on to several children keeps it).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail = bytearray()
    extra = dict(environment or {})
    # Unbuffered, here and in the child: what the run printed is in train.log as it goes, up to a kill.
    with log_path.open("ab", buffering=0) as log:
        assignments = "".join(f"{key}={shlex.quote(value)} " for key, value in extra.items())
        log.write(f"\n$ {assignments}{shlex.join(command)}\n".encode())
        child_environment = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_environment,
            preexec_fn=_end_with_parent if sys.platform == "linux" else None,
            # Its own session: a Ctrl-C in the terminal reaches the runner alone, which passes it on once.
            start_new_session=True,
        )
        assert process.stdout is not None
        if on_start is not None:
            on_start(process)
        received: list[int] = []

        def pass_on(signum: int, frame: object) -> None:
            received.append(signum)
            process.send_signal(signum)

        # Signal handlers can only be set from the main thread; elsewhere the caller's own handling stays.
        stoppers = (signal.SIGTERM, signal.SIGINT) if threading.current_thread() is threading.main_thread() else ()
        previous = {signum: signal.signal(signum, pass_on) for signum in stoppers}
        try:
            while chunk := process.stdout.read1(65536):
                log.write(chunk)
                if echo:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                tail += chunk
                del tail[: max(0, len(tail) - 65536)]
        finally:
            returncode = process.wait()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    if received:  # the runner was asked to stop: its run has stopped too (it resumes with the next `run`)
        name = signal.Signals(received[0]).name
        raise Interrupted(
            f"stopped by {name}; the run in {log_path.parent} stopped with it: run the same command again to resume"
        )
    return ProcessResult(returncode, tail.decode(errors="replace"))


class Interrupted(RuntimeError):
    """The runner received SIGTERM or SIGINT (Ctrl-C), passed it on to its run and waited for it to stop."""


def _end_with_parent() -> None:
    """In the child, before ``exec``: ask Linux for SIGTERM when the runner dies, even by SIGKILL, so that no
    orphaned run keeps training while a new runner resumes the same job."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


#: ``prctl`` option of Linux: the signal a process receives when its parent dies.
PR_SET_PDEATHSIG = 1


def tail_lines(text: str, count: int = TAIL_LINES) -> str:
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return "\n".join(lines[-count:])


@dataclass
class RunSummary:
    """What ``run_experiment`` did: ``(what, state word)`` per job, VAE first when it was considered."""

    actions: list[tuple[str, str]] = field(default_factory=list)


def _execute(
    what: str,
    command: list[str],
    folder: Path,
    state: RunState,
    dry_run: bool,
    echo: bool,
    log: Callable[[str], None],
    runner: Callable[[Sequence[str], Path, bool], ProcessResult] | None,
    describe_outcome: Callable[[], str] | None = None,
) -> str:
    """Run one job unless finished; logs a start line, then a done line with its duration (and
    ``describe_outcome()``), or raises ``RunFailed``."""
    runner = runner if runner is not None else run_process
    word = STATE_WORDS[state]
    if state == "finished":
        log(f"{what}: skipped (finished) {folder}")
        return word
    if dry_run:
        log(f"{what}: would be {word} {folder}\n  {shlex.join(command)}")
        return f"would be {word}"
    refuse_unstartable(what, folder, state)
    log(f"{what}: {word} {folder} (output in {folder / LOG_FILENAME})")
    started = time.monotonic()
    result = runner(command, folder / LOG_FILENAME, echo)
    took = duration(time.monotonic() - started)
    if result.returncode == EXIT_WAITING_FOR_LABELS:
        log(f"{what}: waits for an expert's labels after {took}; {tail_lines(result.tail, 1)}")
        return "waiting for labels"
    if result.returncode != 0:
        raise RunFailed(
            f"{what} failed with exit code {result.returncode} after {took}; run folder {folder}, full output in "
            f"{folder / LOG_FILENAME}; last lines:\n{tail_lines(result.tail)}"
        )
    outcome = describe_outcome() if describe_outcome is not None else ""
    log(f"{what}: done in {took}{f'; {outcome}' if outcome else ''}")
    return word


def refuse_unstartable(what: str, folder: Path, state: RunState) -> None:
    """Raise ``RunFolderBusy`` for a run another process holds, ``RunFailed`` for one whose checkpoint is unreadable;
    nothing for a run that can start or resume."""
    if state == "running":
        owner = live_owner(folder)
        raise RunFolderBusy(
            f"{what}: {folder} is in use by {owner.describe() if owner else 'another process'}: wait for it to end "
            "(`python experiment.py list` shows it as running)"
        )
    if state == "failed":
        raise RunFailed(
            f"{what}: the checkpoint {folder / 'checkpoints' / 'last.ckpt'} cannot be read (truncated or corrupt), "
            f"so the run cannot be resumed: move {folder} aside and run again to start it anew"
        )


def encoders_to_train(
    experiment: Experiment, unfinished: Sequence[Job], train_vae: bool, skip: Callable[[str, Path], None]
) -> list[tuple[int, str, VaeRun]]:
    """The experiment's encoders (VAEs) that the ``unfinished`` jobs read and that are not finished yet, each as
    ``(position in experiment.vaes, label, VAE run)``, in the experiment's order: what a runner that starts the
    encoders before their readers (the device pool, SLURM) runs first.

    ``skip(label, folder)`` is called for each finished one, in that order, as it is met. Raises before anything
    starts: ``ValueError`` for an untrained encoder when not ``train_vae``, and :func:`refuse_unstartable`'s errors.
    """
    encoders: list[tuple[int, str, VaeRun]] = []
    for number, vae in enumerate(experiment.vaes):
        if not any(vae in experiment.vaes_for(job.variant) for job in unfinished):
            continue
        what, state = experiment.vae_label(vae), vae_run_state(vae)
        if state == "finished":
            skip(what, vae.folder)
            continue
        if not train_vae:
            raise ValueError(
                f"the VAE at {vae.checkpoint} is not trained yet; run `python experiment.py vae --config "
                f"{experiment.source}` first"
            )
        refuse_unstartable(what, vae.folder, state)
        encoders.append((number, what, vae))
    return encoders


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def final_metric(folder: Path, metric: str) -> str:
    """``val_accuracy 0.9222 at 400 labels``: the metric in the last row of a run's ``history.csv`` (or "")."""
    try:
        history = load_history(folder / HISTORY_FILENAME)
        value = float(history.column(metric)[-1])
    except (OSError, ValueError, IndexError):
        return ""
    return "" if value != value else f"{metric} {value:.4f} at {history.labels[-1]} labels"


def ensure_vae(
    experiment: Experiment,
    *,
    dry_run: bool = False,
    echo: bool = False,
    launcher: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    runner: Callable[[Sequence[str], Path, bool], ProcessResult] | None = None,
) -> str:
    """Train (or finish training) the experiment's VAEs unless their runs are finished; returns the state words."""
    if not experiment.vaes:
        raise ValueError(f"experiment {experiment.name!r} names no VAE config ('vae:' key)")
    launcher = list(launcher) if launcher is not None else default_launcher()
    words = [
        run_vae(experiment, vae, dry_run=dry_run, echo=echo, launcher=launcher, log=log, runner=runner)
        for vae in experiment.vaes
    ]
    return ", ".join(words)


def run_vae(
    experiment: Experiment,
    vae: VaeRun,
    *,
    dry_run: bool = False,
    echo: bool = False,
    launcher: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    runner: Callable[[Sequence[str], Path, bool], ProcessResult] | None = None,
) -> str:
    """Train (or finish training) one of the experiment's VAEs unless its run is finished; returns the state word.

    Raises:
        RunFailed: its run exited with an error.
    """
    launcher = list(launcher) if launcher is not None else default_launcher()
    command = vae_command(vae, launcher)
    return _execute(experiment.vae_label(vae), command, vae.folder, vae_run_state(vae), dry_run, echo, log, runner)


def default_launcher() -> list[str]:
    """``[this python, <repository>/train.py]``."""
    if not TRAIN_SCRIPT.is_file():
        raise FileNotFoundError(f"{TRAIN_SCRIPT} is missing: run the experiments from a checkout of the repository")
    return [sys.executable, str(TRAIN_SCRIPT)]


def run_experiment(
    experiment: Experiment,
    jobs: Iterable[Job],
    *,
    train_vae: bool = True,
    dry_run: bool = False,
    echo: bool = False,
    launcher: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    runner: Callable[[Sequence[str], Path, bool], ProcessResult] | None = None,
) -> RunSummary:
    """Run ``jobs`` one after the other: skip finished runs, resume interrupted ones, start the rest.

    Each VAE comes first when an unfinished job reads it and its run is not finished: it is trained when
    ``train_vae``; otherwise (a SLURM array task, where concurrent tasks must not train it side by side) that is an
    error.

    Args:
        experiment: from :func:`read_experiment`.
        jobs: from :func:`select_jobs`.
        train_vae: train a missing or unfinished VAE before the jobs that need it.
        dry_run: print the commands instead of running them.
        echo: also copy the runs' output to stdout (it always goes to ``<run folder>/train.log``).
        launcher: the program that takes ``fit --config ...`` (default: this Python running ``train.py``).
        log: receives one line per job: skipped / resumed / started.
        runner: runs one command (default :func:`run_process`; tests replace it).

    Raises:
        RunFailed: a run exited with an error; later jobs are not started.
    """
    jobs = list(jobs)
    launcher = list(launcher) if launcher is not None else default_launcher()
    summary = RunSummary()
    needed = [
        vae
        for vae in experiment.vaes
        if any(vae in experiment.vaes_for(job.variant) and task_run_state(job.folder) != "finished" for job in jobs)
    ]
    for vae in needed:
        label, state = experiment.vae_label(vae), vae_run_state(vae)
        if state != "finished" and not train_vae and not dry_run:
            raise ValueError(
                f"the VAE at {vae.checkpoint} is not trained yet; run `python experiment.py vae --config "
                f"{experiment.source}` first (for a SLURM array: as a job the array depends on)"
            )
        if state != "finished" and not train_vae:
            log(f"{label}: missing, and not trained by a single --index job: run `experiment.py vae` first")
        else:
            command = vae_command(vae, launcher)
            word = _execute(label, command, vae.folder, state, dry_run, echo, log, runner)
            summary.actions.append((label, word))
    run_seconds: list[float] = []  # of the jobs run by this call, for the time-left estimate
    for position, job in enumerate(jobs):
        what = f"[{job.index}] {job.variant.name} seed {job.seed}"
        command = task_command(experiment, job, launcher)
        state = task_run_state(job.folder)
        started = time.monotonic()
        word = _execute(
            what,
            command,
            job.folder,
            state,
            dry_run,
            echo,
            log,
            runner,
            lambda job=job: final_metric(job.folder, experiment.metric),
        )
        summary.actions.append((f"{job.variant.name}/seed_{job.seed}", word))
        if state != "finished" and not dry_run:
            run_seconds.append(time.monotonic() - started)
            left = sum(task_run_state(later.folder) != "finished" for later in jobs[position + 1 :])
            estimate = f", about {duration(left * sum(run_seconds) / len(run_seconds))} left" if left else ""
            log(f"{position + 1} of {len(jobs)} jobs done{estimate}")
    return summary


def describe_jobs(experiment: Experiment, jobs: Sequence[Job]) -> str:
    """A table of jobs: flat index, variant, seed, state and run folder (what ``experiment.py list`` prints)."""
    lines = [f"{'index':>5}  {'variant':<20} {'seed':>4}  {'state':<8} folder"]
    for job in jobs:
        lines.append(
            f"{job.index:>5}  {job.variant.name:<20} {job.seed:>4}  {task_run_state(job.folder):<8} {job.folder}"
        )
    for vae in experiment.vaes:
        lines.append(f"  vae  {vae.config} -> {vae.checkpoint} ({vae_run_state(vae)})")
    lines.append(f"{len(jobs)} jobs; SLURM: --array=0-{len(jobs) - 1} with `run --index $SLURM_ARRAY_TASK_ID`")
    return "\n".join(lines)
