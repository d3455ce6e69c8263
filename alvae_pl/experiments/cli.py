"""``python experiment.py {run,vae,list,report,tsne,features}``: run a multi-seed comparison, report it, draw Figs.
5-6, measure what feature spaces know."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from alvae_pl.experiments import slurm as slurm_submission
from alvae_pl.experiments.device_pool import format_outcomes, parse_devices, run_on_devices
from alvae_pl.experiments.execution import Interrupted, RunFailed, describe_jobs, ensure_vae, run_experiment
from alvae_pl.experiments.experiment import Experiment, read_experiment
from alvae_pl.experiments.jobs import Job, expand_jobs, select_jobs
from alvae_pl.experiments.slurm import (
    SLURM_FOLDER,
    SlurmOptions,
    make_executor,
    parse_sbatch_options,
    submit_experiment,
    wait_for,
)
from alvae_pl.lightning_noise import quiet_lightning
from alvae_pl.run_lock import RunFolderBusy

_DESCRIPTION = """\
Reproduce the paper's comparison: every variant (heuristic with/without VAE features) trained once per seed,
with the same initial labels per seed, then a report of curves and paired tests.

  python experiment.py run --config configs/experiments/digits_coreset.yaml
  python experiment.py report --config configs/experiments/digits_coreset.yaml
  python experiment.py report --config configs/experiments/digits_low_budget.yaml \\
      --config configs/experiments/digits_mid_budget.yaml   # also ranks the variants over both
  python experiment.py tsne --run lightning_logs/tsne_chest/seed_0 \\
      --vae lightning_logs/vae_chestmnist/seed_0/checkpoints/last.ckpt
"""

_RUN_EPILOG = """\
Each job runs `python train.py fit --config <variant config> --seed_everything=k --data.pool_seed=k
--trainer.logger.init_args.save_dir=<root> --trainer.logger.init_args.name=<name>/<variant>
--trainer.logger.init_args.version=seed_<k> --ckpt_path=last <overrides>`; its output goes to
<root>/<name>/<variant>/seed_<k>/train.log. Finished runs are skipped, interrupted ones resume from last.ckpt.
Rerun a finished run by deleting its folder.

On SLURM: train the VAEs in one job, then one array task per job:
  vae=$(sbatch --parsable --wrap "python experiment.py vae --config X.yaml")
  sbatch --dependency=afterok:$vae --array=0-<N-1> \\
      --wrap "python experiment.py run --config X.yaml --index \\$SLURM_ARRAY_TASK_ID"
(`python experiment.py list --config X.yaml` shows N and the jobs.) With --index no VAE is ever trained, so
that array tasks do not train one side by side; a missing VAE is then an error. Or let submitit submit them:
  python experiment.py run --config X.yaml --slurm --partition gpu --time 240

On one machine's GPUs, side by side (encoders first, each run pinned to its device, a table at the end):
  python experiment.py run --config X.yaml --gpus 0,1,2,3 --jobs-per-gpu 2
"""

_TSNE_EPILOG = """\
The run must be finished: the active-learning loop resets the weights after each acquisition, so only the
checkpoint written after the last round holds a model trained on its labeled set. The paper's figures come from
one round on 1,000 labels, e.g. for ChestMNIST:
  python train.py fit --config configs/chestmnist_coreset.yaml --data.initial_labels=1000 --active.max_labels=1000 \\
      --trainer.logger.init_args.name=tsne_chest
  python experiment.py tsne --run lightning_logs/tsne_chest/seed_0 \\
      --vae lightning_logs/vae_chestmnist/seed_0/checkpoints/last.ckpt
(the paper: 5% of the unlabeled pool, i.e. 1,556 images, 100 selected). Note: --fraction of the unlabeled pool
must give at least --select candidates (on digits, 1,000 labels leave ~260 unlabeled: use --fraction 1 --select 50).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="experiment.py", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,vae,list,report,tsne,features}")

    run = commands.add_parser(
        "run",
        help="train every (variant, seed) not finished yet, the VAEs they read first if needed",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", required=True, help="experiment YAML, e.g. configs/experiments/digits_coreset.yaml")
    run.add_argument("--variant", action="append", help="only this variant (repeatable)")
    run.add_argument("--seed", type=int, action="append", help="only this seed (repeatable)")
    run.add_argument("--index", type=int, help="only the job at this flat index (SLURM array task; see `list`)")
    run.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    run.add_argument("--echo", action="store_true", help="also show the runs' output here (always in train.log)")
    spread = run.add_argument_group("across local GPUs")
    spread.add_argument(
        "--gpus",
        help="run the jobs side by side on these devices, each pinned to one: CUDA indices (0,1,2,3), all, or cpu:N "
        "(N slots without a GPU)",
    )
    spread.add_argument("--jobs-per-gpu", type=int, default=1, help="runs at once on each device (default 1)")
    cluster = run.add_argument_group('on SLURM (submitit; pip install "alvae-pl[slurm]")')
    cluster.add_argument("--slurm", action="store_true", help="submit one job per run (encoders first) and return")
    cluster.add_argument("--partition", help="SLURM partition (default: the cluster's)")
    cluster.add_argument("--time", type=int, default=240, help="minutes per job; a run cut off resumes (default 240)")
    cluster.add_argument("--gpus-per-job", type=int, default=1, help="GPUs of each job (default 1; 0 on a CPU node)")
    cluster.add_argument("--cpus-per-job", type=int, help="CPUs of each job (default: the cluster's)")
    cluster.add_argument("--mem", help="memory of each job, e.g. 32G (default: the cluster's)")
    cluster.add_argument("--account", help="SLURM account to charge")
    cluster.add_argument(
        "--slurm-option", action="append", default=[], metavar="KEY=VALUE", help="another sbatch option, e.g. qos=high"
    )

    vae = commands.add_parser("vae", help="train the experiment's VAEs unless their runs are finished")
    vae.add_argument("--config", required=True, help="experiment YAML")
    vae.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    vae.add_argument("--echo", action="store_true", help="also show the runs' output here")

    listing = commands.add_parser("list", help="print the jobs with their flat index and state")
    listing.add_argument("--config", required=True, help="experiment YAML")

    report = commands.add_parser("report", help="curves, paired tests and TensorBoard images of an experiment")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--config",
        action="append",
        help="experiment YAML (its variants, seeds, baseline and metric); repeat it to also compare several "
        "experiments together (penalty matrix and critical-difference diagram over the variants all of them ran)",
    )
    source.add_argument("--folder", help="an experiment folder <root>/<name> (all its variants; needs --baseline)")
    report.add_argument("--baseline", help="variant the others are compared with (default: the config's)")
    report.add_argument("--metric", help="main metric printed here (default: the config's, else test_accuracy)")
    report.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    report.add_argument(
        "--out",
        help="report folder (default <experiment folder>/report; with several --config, the combined report's "
        "folder, default <root>/report_<name>+<name>...)",
    )
    report.add_argument(
        "--fraction",
        type=float,
        default=0.95,
        help="label efficiency: labels to reach this share of the best final mean (default 0.95)",
    )
    report.add_argument(
        "--blocks",
        choices=("seed", "round"),
        default="seed",
        help="what the rank tests rank over: (experiment, seed) areas or (experiment, label count) means (seed)",
    )

    tsne = commands.add_parser(
        "tsne",
        help="t-SNE of core-set picks on task vs task+VAE features (Figs. 5-6)",
        description="Core-set selection on the task features vs on [task, alpha * VAE] features, from one "
        "finished run, drawn as t-SNE panels side by side (PNG + TensorBoard).",
        epilog=_TSNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsne.add_argument("--run", required=True, help="folder of a finished task run (config.yaml, checkpoints/last.ckpt)")
    tsne.add_argument("--vae", required=True, help="VAE or contrastive encoder checkpoint trained on the same data")
    tsne.add_argument("--fraction", type=float, default=0.05, help="share of the unlabeled pool to select from (0.05)")
    tsne.add_argument("--select", type=int, default=100, help="points each selection picks (100)")
    tsne.add_argument("--vae-alpha", type=float, default=1.0, help="weight of the VAE features, eq. 6 (1.0)")
    tsne.add_argument(
        "--normalize", action="store_true", help="scale task and VAE blocks to unit mean norm first (paper: no)"
    )
    tsne.add_argument("--seed", type=int, default=0, help="seeds the random share and t-SNE (0)")
    tsne.add_argument("--out", help="PNG path (default <run>/tsne_selection.png)")
    tsne.add_argument("--threads", type=int, help="OpenMP threads for t-SNE (default: all)")

    features = commands.add_parser(
        "features",
        help="how much class information VAE and task features carry (k-NN accuracy, k-means NMI, t-SNE)",
        description="Embed the test split with a VAE's posterior mean and/or a finished task run's 512-d features and "
        "report 5-NN accuracy (5-fold) and the NMI of k-means clusters with the classes, with a t-SNE map per space.",
    )
    features.add_argument(
        "--vae", help="a VAE or contrastive encoder's <run>/checkpoints/last.ckpt (its config.yaml names the data)"
    )
    features.add_argument("--run", help="folder of a finished task run")
    features.add_argument("--out", help="output folder (default: the VAE's run folder, else the task run's)")
    features.add_argument("--seed", type=int, default=0, help="seeds folds, k-means and t-SNE (0)")
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.slurm and (args.gpus is not None or args.dry_run or args.echo):
        raise ValueError("--slurm submits the jobs: leave out --gpus, --dry-run and --echo (see `list` for the jobs)")
    experiment = read_experiment(args.config)
    jobs = select_jobs(experiment, args.variant, args.seed, args.index)
    if args.slurm:
        _submit(args, experiment, jobs)
        return
    if args.gpus is not None:
        outcomes = run_on_devices(
            experiment,
            jobs,
            parse_devices(args.gpus),
            args.jobs_per_gpu,
            train_vae=args.index is None,
            dry_run=args.dry_run,
            echo=args.echo,
        )
        if args.dry_run:
            return
        print(format_outcomes(outcomes))
        failed = [outcome.what for outcome in outcomes if outcome.failed]
        if failed:
            raise RunFailed(
                f"{len(failed)} of {len(outcomes)} jobs failed or could not start ({', '.join(failed)}): see the table "
                "above and each run's train.log; run the same command again to retry them"
            )
        return
    summary = run_experiment(experiment, jobs, train_vae=args.index is None, dry_run=args.dry_run, echo=args.echo)
    counts: dict[str, int] = {}
    for _, word in summary.actions:
        counts[word] = counts.get(word, 0) + 1
    print("done: " + ", ".join(f"{count} {word}" for word, count in counts.items()))


def _submit(args: argparse.Namespace, experiment: Experiment, jobs: list[Job]) -> None:
    options = SlurmOptions(
        partition=args.partition,
        time_minutes=args.time,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job,
        mem=args.mem,
        account=args.account,
        extra=parse_sbatch_options(args.slurm_option),
    )
    executor = make_executor(experiment.folder / SLURM_FOLDER, options, cluster=slurm_submission.CLUSTER)
    submitted = submit_experiment(experiment, jobs, executor, train_vae=args.index is None)
    if not submitted:
        print("nothing to submit: every selected job is finished")
    elif executor.cluster == "slurm":
        print(
            f"{len(submitted)} jobs submitted (logs in {experiment.folder / SLURM_FOLDER}); `squeue --me` shows the "
            f"queue, `python experiment.py list --config {args.config}` what is done"
        )
    else:  # submitit's local executor: the jobs are this machine's processes, wait for them
        failed = wait_for(submitted)
        print(f"{len(submitted) - failed} of {len(submitted)} jobs done")
        if failed:
            raise RunFailed(f"{failed} of {len(submitted)} jobs failed: see their train.log")


def _report(args: argparse.Namespace) -> None:
    if not (0.0 < args.alpha < 1.0 and 0.0 < args.fraction <= 1.0):
        raise ValueError(f"--alpha must lie in (0, 1) and --fraction in (0, 1], got {args.alpha} and {args.fraction}")
    from alvae_pl.analysis.history import load_experiment
    from alvae_pl.analysis.report import filter_runs, write_report

    if args.config is not None and len(args.config) > 1:
        _combined_report(args)
        return
    experiment: Experiment | None = None
    if args.config is not None:
        experiment = read_experiment(args.config[0])
        folder, baseline, metric = experiment.folder, experiment.baseline, experiment.metric
        runs = filter_runs(load_experiment(folder), list(experiment.variants), experiment.seeds)
    else:
        if args.baseline is None:
            raise ValueError("--folder needs --baseline (the variant the others are compared with)")
        folder, baseline, metric = Path(args.folder), args.baseline, "test_accuracy"
        runs = load_experiment(folder)
    baseline = args.baseline or baseline
    metric = args.metric or metric
    out = Path(args.out) if args.out else folder / "report"
    metrics = ["val_accuracy", "test_accuracy", "val_auroc", "test_auroc"]
    if metric not in metrics:
        metrics.append(metric)
    report = write_report(
        runs, out, baseline, metrics, args.alpha, title=folder.name, fraction=args.fraction, blocks=args.blocks
    )
    for name, reason in report.skipped.items():
        print(f"note: {name}: {reason}", file=sys.stderr)
    if metric in report.markdown:
        print(report.markdown[metric])
        print(report.area_markdown[metric])
    elif metric not in report.figures:
        raise ValueError(f"the main metric {metric!r} has no values in the histories under {folder}")
    print(f"report: {out / 'report.md'} (figures {', '.join(p.name for p in report.figures.values())})")


def _combined_report(args: argparse.Namespace) -> None:
    """Each experiment's own report, then the penalty matrix and ranks over all of them."""
    from alvae_pl.analysis.comparisons import write_combined_report
    from alvae_pl.analysis.history import load_experiment
    from alvae_pl.analysis.penalty_matrix import common_heuristics
    from alvae_pl.analysis.report import REPORT_METRICS, filter_runs, write_report

    experiments = [read_experiment(path) for path in args.config]
    names = [experiment.name for experiment in experiments]
    if len(set(names)) != len(names):
        raise ValueError(f"--config names an experiment twice ({names}); give each experiment once")
    metric = args.metric or experiments[0].metric
    if args.metric is None and len({experiment.metric for experiment in experiments}) > 1:
        raise ValueError(
            f"the experiments' main metrics differ ({[e.metric for e in experiments]}); choose one with --metric"
        )
    metrics = list(REPORT_METRICS) + ([metric] if metric not in REPORT_METRICS else [])
    settings = {
        experiment.name: filter_runs(load_experiment(experiment.folder), list(experiment.variants), experiment.seeds)
        for experiment in experiments
    }
    common_heuristics(settings)  # fewer than two shared variants: say so before any report is written
    for experiment in experiments:
        runs = settings[experiment.name]
        baseline = args.baseline if args.baseline in runs else experiment.baseline
        write_report(
            runs,
            experiment.report_folder,
            baseline,
            metrics,
            args.alpha,
            title=experiment.name,
            fraction=args.fraction,
            blocks=args.blocks,
        )
        print(f"report: {experiment.report_folder / 'report.md'}")
    out = Path(args.out) if args.out else experiments[0].root / ("report_" + "+".join(names))
    combined = write_combined_report(settings, out, metrics, args.alpha, args.blocks)
    for name, variants in combined.left_out.items():
        print(
            f"note: {name}: {', '.join(variants)} not run in every experiment, left out of the combined report",
            file=sys.stderr,
        )
    sections = combined.sections.get(metric)
    if sections is None:
        raise ValueError(f"the main metric {metric!r} has no values in every experiment")
    print(sections.penalty)
    print(sections.ranks or "\n".join(sections.notes))
    print(f"combined report: {out / 'report.md'}")


def _tsne(args: argparse.Namespace) -> None:
    from alvae_pl.analysis.tsne_selection import compare_selections

    result = compare_selections(
        args.run,
        args.vae,
        fraction=args.fraction,
        select=args.select,
        alpha=args.vae_alpha,
        normalize=args.normalize,
        seed=args.seed,
        out=args.out,
        num_threads=args.threads,
    )
    overlap = len(set(result.task_selected.tolist()) & set(result.combined_selected.tolist()))
    print(
        f"{len(result.labeled)} labeled; {len(result.candidates)} of {result.num_unlabeled} unlabeled as candidates; "
        f"{len(result.task_selected)} selected "
        f"per feature space, {overlap} in both. Figure: {result.path}"
    )


def _features(args: argparse.Namespace) -> None:
    from alvae_pl.analysis.feature_knowledge import markdown, report_knowledge

    rows, path = report_knowledge(args.vae, args.run, args.out, args.seed)
    print(markdown(rows), end="")
    print(f"written: {path} (and {path.with_suffix('.csv').name}, {path.stem}_tsne.png beside it)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``experiment.py``; returns the exit status (2: bad input, 1: a training run failed)."""
    args = build_parser().parse_args(argv)
    quiet_lightning()  # the t-SNE command builds a Trainer
    try:
        if args.command == "run":
            _run(args)
        elif args.command == "vae":
            ensure_vae(read_experiment(args.config), dry_run=args.dry_run, echo=args.echo)
        elif args.command == "list":
            experiment = read_experiment(args.config)
            print(describe_jobs(experiment, expand_jobs(experiment)))
        elif args.command == "report":
            _report(args)
        elif args.command == "tsne":
            _tsne(args)
        elif args.command == "features":
            _features(args)
    except (RunFailed, Interrupted) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except RunFolderBusy as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
