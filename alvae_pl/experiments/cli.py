"""``python experiment.py {run,vae,list,report,tsne,features}``: run a multi-seed comparison, report it, draw Figs.
5-6, measure what feature spaces know."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from alvae_pl.experiments.execution import Interrupted, RunFailed, describe_jobs, ensure_vae, run_experiment
from alvae_pl.experiments.experiment import Experiment, read_experiment
from alvae_pl.experiments.jobs import expand_jobs, select_jobs
from alvae_pl.lightning_noise import quiet_lightning
from alvae_pl.run_lock import RunFolderBusy

_DESCRIPTION = """\
Reproduce the paper's comparison: every variant (heuristic with/without VAE features) trained once per seed,
with the same initial labels per seed, then a report of curves and paired tests.

  python experiment.py run --config configs/experiments/digits_coreset.yaml
  python experiment.py report --config configs/experiments/digits_coreset.yaml
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
that array tasks do not train one side by side; a missing VAE is then an error.
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

    vae = commands.add_parser("vae", help="train the experiment's VAEs unless their runs are finished")
    vae.add_argument("--config", required=True, help="experiment YAML")
    vae.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    vae.add_argument("--echo", action="store_true", help="also show the runs' output here")

    listing = commands.add_parser("list", help="print the jobs with their flat index and state")
    listing.add_argument("--config", required=True, help="experiment YAML")

    report = commands.add_parser("report", help="curves, paired tests and TensorBoard images of an experiment")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="experiment YAML (its variants, seeds, baseline and metric)")
    source.add_argument("--folder", help="an experiment folder <root>/<name> (all its variants; needs --baseline)")
    report.add_argument("--baseline", help="variant the others are compared with (default: the config's)")
    report.add_argument("--metric", help="main metric printed here (default: the config's, else test_accuracy)")
    report.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    report.add_argument("--out", help="report folder (default <experiment folder>/report)")

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
    experiment = read_experiment(args.config)
    jobs = select_jobs(experiment, args.variant, args.seed, args.index)
    summary = run_experiment(experiment, jobs, train_vae=args.index is None, dry_run=args.dry_run, echo=args.echo)
    counts: dict[str, int] = {}
    for _, word in summary.actions:
        counts[word] = counts.get(word, 0) + 1
    print("done: " + ", ".join(f"{count} {word}" for word, count in counts.items()))


def _report(args: argparse.Namespace) -> None:
    from alvae_pl.analysis.history import load_experiment
    from alvae_pl.analysis.report import filter_runs, write_report

    experiment: Experiment | None = None
    if args.config is not None:
        experiment = read_experiment(args.config)
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
    report = write_report(runs, out, baseline, metrics, args.alpha, title=folder.name, main_metric=metric)
    for name, reason in report.skipped.items():
        print(f"note: {name}: {reason}", file=sys.stderr)
    if metric in report.markdown:
        print(report.markdown[metric])
        print(report.area_markdown[metric])
    elif metric not in report.figures:
        raise ValueError(f"the main metric {metric!r} has no values in the histories under {folder}")
    print(f"report: {out / 'report.md'} (figures {', '.join(p.name for p in report.figures.values())})")


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
