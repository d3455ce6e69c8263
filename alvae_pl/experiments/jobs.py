"""The jobs of an experiment: one ``train.py`` run per (variant, seed), their states and their commands."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alvae_pl.experiments.experiment import Experiment, VaeRun, Variant, settings_arguments
from alvae_pl.experiments.train_config import config_arguments
from alvae_pl.run_folder import CHECKPOINT_PATH, records_in
from alvae_pl.run_lock import live_owner
from alvae_pl.run_status import read_run_status

#: ``running``: a live process holds the run folder's lock; ``failed``: its checkpoint cannot be read (truncated or
#: corrupt), so it cannot be resumed.
RunState = Literal["finished", "running", "failed", "resume", "start"]
#: What ``run`` prints for each state.
STATE_WORDS: dict[str, str] = {
    "finished": "skipped",
    "running": "skipped (running)",
    "failed": "failed",
    "resume": "resumed",
    "start": "started",
}


@dataclass(frozen=True)
class Job:
    """One ``train.py`` run of the experiment: ``index = variant position * len(seeds) + seed position``."""

    index: int
    variant: Variant
    seed: int
    folder: Path


def expand_jobs(experiment: Experiment) -> list[Job]:
    """Every (variant, seed) job, variant-major in config order: the flat index a SLURM array task passes."""
    jobs = []
    for variant in experiment.variants.values():
        for seed in experiment.seeds:
            jobs.append(Job(len(jobs), variant, seed, experiment.run_folder(variant.name, seed)))
    return jobs


def select_jobs(
    experiment: Experiment,
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    index: int | None = None,
) -> list[Job]:
    """The jobs to run: all, those of the given variants and/or seeds, or the one at flat ``index``."""
    jobs = expand_jobs(experiment)
    if index is not None:
        if variants or seeds:
            raise ValueError("pass either --index or --variant/--seed, not both")
        if not 0 <= index < len(jobs):
            raise ValueError(
                f"--index {index} is out of range: the experiment has {len(jobs)} jobs (0..{len(jobs) - 1}); "
                "see `python experiment.py list`"
            )
        return [jobs[index]]
    for variant in variants or ():
        if variant not in experiment.variants:
            raise ValueError(f"unknown variant {variant!r}; choose one of {list(experiment.variants)}")
    for seed in seeds or ():
        if seed not in experiment.seeds:
            raise ValueError(f"seed {seed} is not one of the experiment's seeds {list(experiment.seeds)}")
    return [job for job in jobs if (not variants or job.variant.name in variants) and (not seeds or job.seed in seeds)]


def _state(folder: Path, checkpoint: Path) -> RunState:
    if live_owner(folder) is not None:
        return "running"
    if read_run_status(folder) == "finished":
        return "finished"
    if not checkpoint.is_file():
        return "start"
    # A torch checkpoint is a zip archive: a truncated or overwritten one has no readable central directory.
    return "resume" if zipfile.is_zipfile(checkpoint) else "failed"


def task_run_state(folder: Path) -> RunState:
    """``running`` (a live process holds the folder's lock), ``finished`` (the run's ``run_status.json`` says so),
    ``resume`` (a readable ``last.ckpt`` to resume from), ``failed`` (an unreadable one) or ``start``."""
    return _state(folder, folder / CHECKPOINT_PATH)


def vae_run_state(vae: VaeRun) -> RunState:
    """The same for one of the experiment's VAE runs, whose folder and checkpoint its config decides."""
    return _state(vae.folder, vae.checkpoint)


def _resume(folder: Path) -> list[str]:
    """``--ckpt_path=last`` where an earlier attempt left records (what ``train.py`` refuses to start over), none
    for a fresh run (where Lightning would warn that there is no checkpoint to load)."""
    return ["--ckpt_path=last"] if records_in(folder) else []


def task_command(experiment: Experiment, job: Job, launcher: Sequence[str]) -> list[str]:
    """The ``train.py fit`` command of one job (``launcher``: e.g. ``[python, train.py]``)."""
    return [
        *launcher,
        "fit",
        *config_arguments(job.variant.configs),
        *settings_arguments(experiment.runner_settings(job.variant.name, job.seed)),
        *_resume(job.folder),
        *experiment.overrides,
        *job.variant.overrides,
    ]


def vae_command(vae: VaeRun, launcher: Sequence[str]) -> list[str]:
    return [*launcher, "fit", *config_arguments([vae.config]), *_resume(vae.folder), *vae.overrides]
