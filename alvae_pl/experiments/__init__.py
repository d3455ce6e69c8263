"""Multi-seed experiments: one ``train.py`` run per (variant, seed), skipped when finished, resumed when interrupted.

The layers, each its own module:

- ``spec``: the experiment file as dataclasses that jsonargparse checks (types, required and unknown keys);
- ``train_config``: what ``train.py`` makes of a run's arguments, asked of its own parser (run folder, checkpoint,
  the VAE checkpoints a run reads), so the runner re-derives nothing the CLI knows;
- ``experiment``: :func:`read_experiment`, the file resolved against ``train.py``: variants, VAE runs, folders;
- ``jobs``: (variant, seed) jobs, their states from ``run_status.json``, their ``train.py`` commands;
- ``execution``: running them one after the other as subprocesses (isolated, and SLURM-array friendly);
- ``device_pool``: running them side by side on the local GPUs, each pinned to one (``run --gpus``);
- ``slurm``: submitting them to a SLURM cluster through submitit (``run --slurm``);
- ``cli``: ``python experiment.py {run,vae,list,report,tsne,features}``.

Runs stay subprocesses: a crash or an out-of-memory error ends one run, not the experiment, and each job is the
same command a SLURM array task runs.
"""

from alvae_pl.experiments.execution import RunFailed, describe_jobs, ensure_vae, run_experiment
from alvae_pl.experiments.experiment import Experiment, VaeRun, Variant, read_experiment
from alvae_pl.experiments.jobs import Job, expand_jobs, select_jobs, task_run_state, vae_run_state

__all__ = [
    "Experiment",
    "Job",
    "RunFailed",
    "VaeRun",
    "Variant",
    "describe_jobs",
    "ensure_vae",
    "expand_jobs",
    "read_experiment",
    "run_experiment",
    "select_jobs",
    "task_run_state",
    "vae_run_state",
]
