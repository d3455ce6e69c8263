"""An experiment's jobs spread over the local GPUs: up to ``jobs_per_device x devices`` runs at once, each pinned to
its device, the VAEs (and other encoders) before the runs that read them.

Each run is the same ``train.py`` subprocess the sequential runner starts (its own session, ended with the runner,
its output unbuffered in ``train.log``), with ``CUDA_VISIBLE_DEVICES`` naming its device alone, so that a run
configured for one GPU (``trainer.devices: 1``) trains on the device it was given. A job starts when a device has a
free slot and the encoders it reads have finished; a failed encoder leaves its readers unstarted, every other job
goes on. Exit status 0 is done, 3 waits for an expert's labels, anything else failed; the end is a table of what
each job did. SIGTERM or SIGINT (Ctrl-C) reaching the runner is passed on to every running job, no new job starts,
and the next call resumes them from their checkpoints, as a sequential run does.

Devices are CUDA indices as this process sees them (positions in its own ``CUDA_VISIBLE_DEVICES`` where that is
set, e.g. inside a SLURM allocation), ``all``, or ``cpu:N``: ``N`` slots without a GPU, the stand-in the tests use.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from alvae_pl.cli import EXIT_WAITING_FOR_LABELS
from alvae_pl.experiments.execution import (
    LOG_FILENAME,
    Interrupted,
    ProcessResult,
    default_launcher,
    duration,
    encoders_to_train,
    final_metric,
    refuse_unstartable,
    run_process,
    tail_lines,
)
from alvae_pl.experiments.experiment import Experiment
from alvae_pl.experiments.jobs import Job, task_command, task_run_state, vae_command

#: Names the device a run was given (``0``, ``cpu:1``), beside ``CUDA_VISIBLE_DEVICES``: what the run's ``train.log``
#: and environment say about where it trained.
DEVICE_VARIABLE = "ALVAE_DEVICE"
#: How often the scheduler wakes to notice a signal while every slot is busy, in seconds.
_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Device:
    """Where runs train: a GPU or a CPU stand-in.

    Attributes:
        name: as the user named it: a CUDA index (``"0"``) or ``"cpu:<k>"``.
        visible: the run's ``CUDA_VISIBLE_DEVICES``: the GPU's index or UUID as the driver knows it; ``""`` hides
            every GPU (a CPU stand-in).
    """

    name: str
    visible: str

    def environment(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": self.visible, DEVICE_VARIABLE: self.name}


def parse_devices(text: str) -> list[Device]:
    """``--gpus``: ``0,1,2,3``, ``all`` (every GPU this process sees) or ``cpu:N`` (N slots without a GPU).

    Raises:
        ValueError: an index that is no number, repeated, or beyond the GPUs this process sees; no GPU for ``all``.
    """
    text = text.strip()
    if text.startswith("cpu:"):
        count = text.removeprefix("cpu:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--gpus {text}: write cpu:N with N >= 1 slots without a GPU, e.g. cpu:2")
        return [Device(f"cpu:{k}", "") for k in range(int(count))]
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    # Inside an allocation that already narrowed the GPUs, index k is the k-th of them, as torch numbers them.
    visible = [entry.strip() for entry in inherited.split(",") if entry.strip()] if inherited is not None else None
    if text == "all":
        if visible is None:
            import torch

            visible = [str(k) for k in range(torch.cuda.device_count())]
        if not visible:
            raise ValueError("--gpus all: this machine shows no GPU; name CPU slots instead, e.g. --gpus cpu:2")
        return [Device(str(k), entry) for k, entry in enumerate(visible)]
    names = [name.strip() for name in text.split(",")]
    if not all(name.isdigit() for name in names):
        raise ValueError(f"--gpus {text}: write CUDA device indices separated by commas (0,1,2,3), all, or cpu:N")
    if len(set(names)) != len(names):
        raise ValueError(f"--gpus {text} repeats a device; use --jobs-per-gpu for several jobs on one GPU")
    if visible is not None and any(int(name) >= len(visible) for name in names):
        raise ValueError(
            f"--gpus {text}: this process sees {len(visible)} GPU(s) (CUDA_VISIBLE_DEVICES={inherited}); "
            f"use indices 0..{len(visible) - 1}"
        )
    return [Device(name, visible[int(name)] if visible is not None else name) for name in names]


@dataclass(frozen=True)
class Outcome:
    """What became of one job: ``word`` is ``done``, ``waiting for labels``, ``failed (exit N)``, ``stopped``,
    ``skipped (finished)`` or ``not started: ...``; ``device`` is empty for a job that did not run."""

    what: str
    folder: Path
    word: str
    device: str = ""
    seconds: float | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.word.startswith(("failed", "not started"))


@dataclass(frozen=True)
class _Task:
    """A run to start: its command is built when it starts (``--ckpt_path=last`` depends on what its folder holds
    then); ``needs`` are the positions of the tasks (encoders) that must be done first."""

    what: str
    folder: Path
    command: Callable[[], list[str]]
    needs: tuple[int, ...] = ()
    outcome: Callable[[], str] | None = None


def _plan(
    experiment: Experiment, jobs: Sequence[Job], train_vae: bool, launcher: list[str]
) -> tuple[list[_Task], list[Outcome]]:
    """The tasks to run, encoders first, and the finished jobs skipped. Raises (before anything starts) for a run
    another process holds, an unreadable checkpoint, or an untrained VAE that ``train_vae`` may not train."""
    tasks: list[_Task] = []
    skipped: list[Outcome] = []
    unfinished = [job for job in jobs if task_run_state(job.folder) != "finished"]

    def skip(what: str, folder: Path) -> None:
        skipped.append(Outcome(what, folder, "skipped (finished)"))

    position_of_vae: dict[int, int] = {}
    for number, what, vae in encoders_to_train(experiment, unfinished, train_vae, skip):
        position_of_vae[number] = len(tasks)
        tasks.append(_Task(what, vae.folder, lambda vae=vae: vae_command(vae, launcher)))
    for job in jobs:
        what = f"[{job.index}] {job.variant.name} seed {job.seed}"
        state = task_run_state(job.folder)
        if state == "finished":
            skipped.append(Outcome(what, job.folder, "skipped (finished)"))
            continue
        refuse_unstartable(what, job.folder, state)
        needs = tuple(
            position_of_vae[number]
            for number, vae in enumerate(experiment.vaes)
            if number in position_of_vae and vae in experiment.vaes_for(job.variant)
        )
        tasks.append(
            _Task(
                what,
                job.folder,
                lambda job=job: task_command(experiment, job, launcher),
                needs,
                lambda job=job: final_metric(job.folder, experiment.metric),
            )
        )
    return tasks, skipped


def _thread_budget(slots: int) -> dict[str, str]:
    """``OMP_NUM_THREADS`` for each run when the user set none: the cores shared out, so that runs side by side do
    not each start a thread per core (a GPU run's host side slows one-for-one when its threads wait on others)."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // slots))}


def run_on_devices(
    experiment: Experiment,
    jobs: Iterable[Job],
    devices: Sequence[Device],
    jobs_per_device: int = 1,
    *,
    train_vae: bool = True,
    dry_run: bool = False,
    echo: bool = False,
    launcher: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[Outcome]:
    """Run ``jobs`` (and the encoders they read) with up to ``jobs_per_device`` at once on each of ``devices``.

    Args:
        experiment: from :func:`~alvae_pl.experiments.read_experiment`.
        jobs: from :func:`~alvae_pl.experiments.select_jobs`.
        devices: from :func:`parse_devices`.
        jobs_per_device: runs sharing one device at a time (small runs leave a GPU idle between steps).
        train_vae: train a missing or unfinished encoder before the jobs that read it (else that is an error).
        dry_run: print the commands instead of running them.
        echo: also copy the run's output to stdout; only with one slot (runs side by side would interleave).
        launcher: the program that takes ``fit --config ...`` (default: this Python running ``train.py``).
        log: receives a line as each job starts and ends.

    Returns:
        One :class:`Outcome` per job and encoder: the skipped first, then in the order they ended.

    Raises:
        Interrupted: SIGTERM or SIGINT reached the runner; the running jobs received it too and have stopped.
        RunFolderBusy, RunFailed, ValueError: before anything starts (a folder in use, an unreadable checkpoint, an
            untrained VAE with ``train_vae=False``, no device).
    """
    if not devices:
        raise ValueError("no device to run on: pass --gpus 0,1 (CUDA indices), all, or cpu:N")
    if jobs_per_device < 1:
        raise ValueError(f"--jobs-per-gpu must be at least 1, got {jobs_per_device}")
    if echo and len(devices) * jobs_per_device > 1:
        raise ValueError("--echo would interleave runs side by side: read each run's train.log instead")
    launcher = list(launcher) if launcher is not None else default_launcher()
    tasks, outcomes = _plan(experiment, list(jobs), train_vae, launcher)
    for skipped in outcomes:
        log(f"{skipped.what}: skipped (finished) {skipped.folder}")
    if dry_run:
        for task in tasks:
            after = f" after {', '.join(tasks[need].what for need in task.needs)}" if task.needs else ""
            log(f"{task.what}: would be started{after} {task.folder}\n  {shlex.join(task.command())}")
        return outcomes
    return outcomes + _Scheduler(tasks, list(devices), jobs_per_device, log, echo).run()


class _Scheduler:
    """Starts tasks on free slots as their needs finish; one thread per running task waits on its subprocess and
    reports to the main thread through a queue; the main thread alone starts tasks and handles signals."""

    def __init__(
        self, tasks: list[_Task], devices: list[Device], jobs_per_device: int, log: Callable[[str], None], echo: bool
    ):
        self.tasks, self.devices, self.jobs_per_device, self.log, self.echo = tasks, devices, jobs_per_device, log, echo
        self.extra_environment = _thread_budget(len(devices) * jobs_per_device)
        self.busy = {device.name: 0 for device in devices}
        self.ended: dict[int, Outcome] = {}
        self.running: dict[int, Device] = {}
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.lock = threading.RLock()  # re-entrant: the signal handler runs in the main thread, which may hold it
        self.reports: queue.Queue[tuple[int, ProcessResult | BaseException, float]] = queue.Queue()
        self.stopped_by: list[int] = []

    def run(self) -> list[Outcome]:
        in_main_thread = threading.current_thread() is threading.main_thread()
        stoppers = (signal.SIGTERM, signal.SIGINT) if in_main_thread else ()
        previous = {signum: signal.signal(signum, self._pass_on) for signum in stoppers}
        try:
            while True:
                if not self.stopped_by:
                    self._start_ready()
                if not self.running:
                    break
                try:
                    position, result, seconds = self.reports.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                self._end(position, result, seconds)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        for position, task in enumerate(self.tasks):
            if position not in self.ended:
                reason = "stopped before it started" if self.stopped_by else "an encoder it reads did not finish"
                self.ended[position] = Outcome(task.what, task.folder, f"not started: {reason}")
        outcomes = list(self.ended.values())
        if self.stopped_by:
            self.log(format_outcomes(outcomes))
            name = signal.Signals(self.stopped_by[0]).name
            raise Interrupted(
                f"stopped by {name}; the runs in progress stopped with it: run the same command again to resume them"
            )
        return outcomes

    def _pass_on(self, signum: int, frame: object) -> None:
        self.stopped_by.append(signum)
        with self.lock:
            processes = list(self.processes.values())
        for process in processes:
            process.send_signal(signum)

    def _started(self, position: int, process: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.processes[position] = process
        if self.stopped_by:  # started as the signal came: it must stop too
            process.send_signal(self.stopped_by[0])

    def _free_device(self) -> Device | None:
        """The device with the fewest runs, if it has room: jobs spread over every device before any doubles up."""
        device = min(self.devices, key=lambda candidate: self.busy[candidate.name])
        return device if self.busy[device.name] < self.jobs_per_device else None

    def _ready(self, position: int) -> bool:
        return all(need in self.ended and not self.ended[need].failed for need in self.tasks[position].needs)

    def _start_ready(self) -> None:
        for position, task in enumerate(self.tasks):
            if position in self.ended or position in self.running:
                continue
            if any(need in self.ended and self.ended[need].failed for need in task.needs):
                failed = ", ".join(self.tasks[need].what for need in task.needs if self.ended[need].failed)
                self.ended[position] = Outcome(task.what, task.folder, f"not started: {failed} failed")
                self.log(f"{task.what}: not started, {failed} failed")
                continue
            if not self._ready(position):
                continue
            device = self._free_device()
            if device is None:
                return
            self.busy[device.name] += 1
            self.running[position] = device
            command = task.command()
            self.log(f"{task.what}: started on device {device.name}, {task.folder} (output in {LOG_FILENAME})")
            environment = {**device.environment(), **self.extra_environment}
            threading.Thread(target=self._work, args=(position, command, environment), daemon=True).start()

    def _work(self, position: int, command: list[str], environment: dict[str, str]) -> None:
        """In its own thread, which lives as long as the run: Linux sends the parent-death signal when the *thread*
        that started a child ends, so the run must not outlive it."""
        started = time.monotonic()
        result: ProcessResult | BaseException
        try:
            result = run_process(
                command,
                self.tasks[position].folder / LOG_FILENAME,
                self.echo,
                environment=environment,
                on_start=lambda process: self._started(position, process),
            )
        except BaseException as error:  # e.g. a launcher that does not exist: reported as this job's failure
            result = error
        finally:
            with self.lock:
                self.processes.pop(position, None)
        self.reports.put((position, result, time.monotonic() - started))

    def _end(self, position: int, result: ProcessResult | BaseException, seconds: float) -> None:
        task, device = self.tasks[position], self.running.pop(position)
        self.busy[device.name] -= 1
        took = duration(seconds)
        if isinstance(result, BaseException):
            word, detail = "failed", f"{type(result).__name__}: {result}"
        elif self.stopped_by and result.returncode != 0:
            word, detail = "stopped", "resumes with the next run"
        elif result.returncode == EXIT_WAITING_FOR_LABELS:
            word, detail = "waiting for labels", tail_lines(result.tail, 1)
        elif result.returncode != 0:
            word, detail = f"failed (exit {result.returncode})", tail_lines(result.tail, 1)
        else:
            word, detail = "done", task.outcome() if task.outcome is not None else ""
        self.ended[position] = Outcome(task.what, task.folder, word, device.name, seconds, detail)
        where = f"; full output in {task.folder / LOG_FILENAME}" if word.startswith("failed") else ""
        self.log(f"{task.what}: {word} after {took} on device {device.name}{f'; {detail}' if detail else ''}{where}")


def format_outcomes(outcomes: Sequence[Outcome]) -> str:
    """The summary table ``experiment.py run --gpus`` prints at the end: job, device, outcome, time, result."""
    width = max([len("job"), *(len(outcome.what) for outcome in outcomes)])
    lines = [f"{'job':<{width}}  {'device':<6}  {'outcome':<20}  {'time':>11}  result"]
    for outcome in outcomes:
        took = duration(outcome.seconds) if outcome.seconds is not None else ""
        lines.append(
            f"{outcome.what:<{width}}  {outcome.device or '-':<6}  {outcome.word:<20}  {took:>11}  {outcome.detail}"
        )
    return "\n".join(lines)
