"""An experiment submitted to a SLURM cluster through submitit: one job per encoder, one job array per group of runs.

The encoders (VAEs, contrastive encoders) the selected runs read are submitted first, one job each; the runs are
submitted as job arrays, those that read an encoder with ``--dependency=afterok:<its job>`` (and
``--kill-on-invalid-dep=yes``, so that the readers of a failed encoder are cancelled instead of waiting forever).
Each job is :class:`TrainJob`: inside the allocation it reads the experiment again and runs its one job exactly as
``experiment.py run --index k`` does (skipped when finished meanwhile, resumed from ``last.ckpt`` when an earlier
attempt left one, output in the run folder's ``train.log``). On a time limit or preemption submitit requeues it and
the run resumes. submitit's own logs and pickles go to ``<experiment folder>/slurm/<job id>/``; what is done is what
the run folders say (``experiment.py list``), not the queue.

Without SLURM, submitit's local executor runs the same jobs as local processes (``cluster="local"``; the tests use
it); it has no dependencies, so :func:`submit_experiment` waits for the encoders before submitting their readers.
submitit is an optional dependency: ``pip install "alvae-pl[slurm]"``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alvae_pl.experiments.execution import (
    default_launcher,
    encoders_to_train,
    refuse_unstartable,
    run_experiment,
    run_vae,
)
from alvae_pl.experiments.experiment import Experiment, read_experiment
from alvae_pl.experiments.jobs import Job, select_jobs, task_run_state

#: The folder of submitit's logs and pickles, inside the experiment's folder (the report reads only variants' seed
#: folders, and no variant may take this name).
SLURM_FOLDER = "slurm"
#: The submitit cluster ``experiment.py run --slurm`` submits to (``local`` runs the jobs as local processes).
CLUSTER = "slurm"


@dataclass(frozen=True)
class SlurmOptions:
    """What each job asks of SLURM (``experiment.py run --slurm`` options).

    Attributes:
        partition: ``--partition``; the cluster's default when None.
        time_minutes: ``--time``: a run that reaches it is requeued by submitit and resumes from its checkpoint.
        gpus_per_job: ``--gpus-per-node`` of each job (one run; 0 for a CPU partition).
        cpus_per_job: ``--cpus-per-task`` of each job; the cluster's default when None.
        mem: ``--mem`` of each job, e.g. ``32G``; the cluster's default when None.
        account: ``--account``; the user's default when None.
        extra: further sbatch options without their ``--``, e.g. ``{"qos": "high", "constraint": "a100"}``.
    """

    partition: str | None = None
    time_minutes: int = 240
    gpus_per_job: int = 1
    cpus_per_job: int | None = None
    mem: str | None = None
    account: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def parse_sbatch_options(options: Sequence[str]) -> dict[str, str]:
    """``["qos=high", "constraint=a100"]`` (``--slurm-option``, repeatable) as submitit's additional parameters."""
    parsed = {}
    for option in options:
        key, equals, value = option.removeprefix("--").partition("=")
        if not equals or not key:
            raise ValueError(f"--slurm-option {option!r}: write KEY=VALUE, e.g. --slurm-option qos=high")
        parsed[key.replace("-", "_")] = value
    return parsed


def make_executor(folder: Path, options: SlurmOptions, cluster: str = CLUSTER) -> Any:
    """A ``submitit.AutoExecutor`` writing its logs under ``folder/<job id>/``, asking for ``options``.

    Raises:
        ValueError: submitit is not installed, or ``cluster="slurm"`` where no ``sbatch`` is on the ``PATH``.
    """
    try:
        import submitit
    except ImportError:
        raise ValueError('--slurm needs submitit: pip install "alvae-pl[slurm]" (or pip install submitit)') from None
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise ValueError("--slurm: sbatch is not on the PATH; submit from a login node of the SLURM cluster")
    if options.time_minutes < 1 or options.gpus_per_job < 0:
        raise ValueError("--time must be at least 1 minute and --gpus-per-job at least 0")
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    parameters: dict[str, Any] = {
        "timeout_min": options.time_minutes,
        "gpus_per_node": options.gpus_per_job,
        "nodes": 1,
        "tasks_per_node": 1,  # the job is the runner of one run; a run on several GPUs is Lightning's DDP inside it
        "slurm_additional_parameters": {"kill_on_invalid_dep": "yes", **options.extra},
    }
    optional = {
        "cpus_per_task": options.cpus_per_job,
        "slurm_partition": options.partition,
        "slurm_mem": options.mem,
        "slurm_account": options.account,
    }
    parameters.update({key: value for key, value in optional.items() if value is not None})
    executor.update_parameters(**parameters)
    return executor


@dataclass(frozen=True)
class TrainJob:
    """The callable a submitted job runs: one encoder (``vae``: its position in the experiment's list) or one
    (variant, seed) job (``index``: its flat index), from the experiment file, in the submitter's directory.

    Read again inside the job rather than pickled: the command (``--ckpt_path=last`` or not) depends on what the run
    folder holds when the job starts, after a requeue too.
    """

    source: Path
    workdir: Path
    launcher: tuple[str, ...]
    index: int | None = None
    vae: int | None = None

    def __call__(self) -> str:
        """Runs the job; returns what it did (``started``, ``resumed``, ``skipped``, ``waiting for labels``).

        Raises:
            RunFailed: the run exited with an error (the job fails, and SLURM cancels the jobs that depend on it).
        """
        os.chdir(self.workdir)
        experiment = read_experiment(self.source)
        if self.vae is not None:
            return run_vae(experiment, experiment.vaes[self.vae], launcher=self.launcher)
        jobs = select_jobs(experiment, index=self.index)
        summary = run_experiment(experiment, jobs, train_vae=False, launcher=self.launcher)
        return summary.actions[-1][1]

    def checkpoint(self) -> Any:
        """submitit calls this on a time limit or preemption: requeue the same job; the run resumes from its
        ``last.ckpt``."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


@dataclass(frozen=True)
class Submitted:
    """One submitted job: what it runs, its run folder, and the submitit job (``.job_id``, ``.result()``)."""

    what: str
    folder: Path
    job: Any


def submit_experiment(
    experiment: Experiment,
    jobs: Iterable[Job],
    executor: Any,
    *,
    train_vae: bool = True,
    launcher: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[Submitted]:
    """Submit the unfinished ``jobs`` and the unfinished encoders they read; finished ones are skipped.

    Args:
        experiment: from :func:`read_experiment` (it must have been read from a file: the jobs read it again).
        jobs: from :func:`select_jobs`.
        executor: from :func:`make_executor` (a ``submitit.AutoExecutor``).
        train_vae: submit an untrained encoder; when False, one is an error (it must be trained first).
        launcher: the program that takes ``fit --config ...`` (default: this Python running ``train.py``).
        log: receives a line per submitted or skipped job, with its job id.

    Returns:
        The submitted jobs, encoders first. With a cluster other than SLURM the encoders have finished by then
        (their readers were submitted after them); an encoder that failed leaves its readers unsubmitted.

    Raises:
        RunFolderBusy, RunFailed, ValueError: before anything is submitted (a folder in use, an unreadable checkpoint,
            an untrained encoder with ``train_vae=False``).
    """
    if experiment.source is None:
        raise ValueError("the experiment must come from a file (read_experiment): its jobs read it again")
    launcher = tuple(launcher if launcher is not None else default_launcher())
    source, workdir = experiment.source.resolve(), Path.cwd()
    jobs = list(jobs)
    unfinished = []
    for job in jobs:
        what, state = f"[{job.index}] {job.variant.name} seed {job.seed}", task_run_state(job.folder)
        if state == "finished":
            log(f"{what}: skipped (finished) {job.folder}")
            continue
        refuse_unstartable(what, job.folder, state)
        unfinished.append(job)
    encoders = encoders_to_train(
        experiment, unfinished, train_vae, lambda what, folder: log(f"{what}: skipped (finished) {folder}")
    )

    waits = getattr(executor, "cluster", "slurm") != "slurm"
    submitted: list[Submitted] = []
    encoder_jobs: dict[int, Submitted] = {}
    executor.update_parameters(name=f"{experiment.name}-encoder")
    for number, what, vae in encoders:
        folder = vae.folder
        job = executor.submit(TrainJob(source, workdir, launcher, vae=number))
        encoder_jobs[number] = Submitted(what, folder, job)
        submitted.append(encoder_jobs[number])
        log(f"{what}: submitted as job {job.job_id} {folder}")

    # One array per set of encoders read; the arrays without a dependency go first, because submitit cannot take a
    # dependency back once set.
    groups: dict[tuple[int, ...], list[Job]] = {}
    for job in unfinished:
        reads = tuple(number for number in encoder_jobs if experiment.vaes[number] in experiment.vaes_for(job.variant))
        groups.setdefault(reads, []).append(job)
    executor.update_parameters(name=experiment.name)
    encoder_ok: dict[int, bool] = {}
    for reads, group in sorted(groups.items(), key=lambda item: len(item[0])):
        after = ""
        if reads and waits:  # no dependencies outside SLURM: the encoders must have finished
            for number in reads:
                if number not in encoder_ok:
                    encoder_ok[number] = _finished(encoder_jobs[number], log)
            if not all(encoder_ok[number] for number in reads):
                for job in group:
                    log(f"[{job.index}] {job.variant.name} seed {job.seed}: not submitted, an encoder it reads failed")
                continue
        elif reads:
            ids = [str(encoder_jobs[number].job.job_id) for number in reads]
            executor.update_parameters(slurm_dependency="afterok:" + ":".join(ids))
            after = f" after job {', '.join(ids)}"
        with executor.batch():
            array = [executor.submit(TrainJob(source, workdir, launcher, index=job.index)) for job in group]
        for job, handle in zip(group, array, strict=True):
            what = f"[{job.index}] {job.variant.name} seed {job.seed}"
            submitted.append(Submitted(what, job.folder, handle))
            log(f"{what}: submitted as job {handle.job_id}{after} {job.folder}")
    return submitted


def _finished(submitted: Submitted, log: Callable[[str], None]) -> bool:
    """Wait for a job; log and return False when it failed."""
    try:
        submitted.job.result()
    except Exception as error:  # submitit's FailedJobError, UncompletedJobError: the job's own error is in its log
        log(f"{submitted.what}: job {submitted.job.job_id} failed: {str(error).strip().splitlines()[-1]}")
        return False
    return True


def wait_for(submitted: Sequence[Submitted], log: Callable[[str], None] = print) -> int:
    """Wait for every job (with submitit's local executor); returns how many failed."""
    return sum(not _finished(item, log) for item in submitted)
