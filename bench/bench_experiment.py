"""One run of the paper's MNIST recipe, timed round by round, and the 10-run experiment's time extrapolated.

    python bench/bench_experiment.py [--device cpu|cuda] [--rounds 9] [--heuristic coreset] [--checkpoint-every epoch]
        [--cuda-graph auto|on|off] [--compile auto|on|off] [--precision 32-true]

Data: MNIST-shaped synthetic images written once to ``/tmp`` as an ``.npz`` (60,000 train, 5,000 validation,
10,000 test, 28 x 28 grayscale uint8, 10 classes: a class template plus noise, so the model learns and core-set
works on meaningful features). The recipe is the paper's: pool 25,000, 3,000 initial labels, 3,000 per round,
10 epochs in round one and 5 more each round, ResNet-18 (ImageNet stem, random init: ``weights: null``, since no
download is possible here), SGD lr 0.001 momentum 0.9, batch 128, core-set selection, evaluation of the
validation and test splits every round, ``last.ckpt`` written after every epoch (``--checkpoint-every round``:
after every round). The objects are the ones ``train.py fit --config configs/mnist_coreset.yaml`` builds, built
here directly, so the bench needs no data download, no jsonargparse and no logger beyond TensorBoard.

Prints one row per round (the run's own ``history.csv`` timings: training, evaluation, acquisition,
checkpointing) and the fit's wall time, whose remainder is start-up, compilation and data loading. With fewer
than the full 9 rounds (``--rounds``), the full run is extrapolated from the measured rates: training at the last
round's images per second, evaluation and acquisition at their mean per round, checkpoints at their mean per
write. The paper's experiment is 10 such runs (core-set with and without VAE features, 5 seeds each), run one
after the other; the VAE, trained once, is not included.
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without installing the package.
sys.path.insert(0, str(REPO_ROOT))

from alvae_pl.acquisition.coreset import CoreSet  # noqa: E402
from alvae_pl.acquisition.random_sampling import RandomSampling  # noqa: E402
from alvae_pl.callbacks.active_learning_loop import ActiveLearningLoop  # noqa: E402
from alvae_pl.callbacks.run_checkpoint import RunCheckpoint  # noqa: E402
from alvae_pl.data.datamodule import ActiveDataModule  # noqa: E402
from alvae_pl.data.sources import NpzSource  # noqa: E402
from alvae_pl.models.task_model import TaskModel  # noqa: E402

SPLITS = {"train": 60_000, "val": 5_000, "test": 10_000}  # MNIST's sizes, with a validation split beside them
RUNS = 10  # the paper's MNIST comparison: 2 variants x 5 seeds


def write_mnist_like(path: Path, image_size: int = 28, seed: int = 0) -> None:
    """MedMNIST-layout ``.npz``: uint8 ``N x S x S`` images and uint8 ``(N, 1)`` labels of 10 classes."""
    rng = np.random.default_rng(seed)
    templates = rng.random((10, image_size, image_size)) > 0.7  # one sparse stroke pattern per class
    arrays: dict[str, np.ndarray] = {}
    for split, count in SPLITS.items():
        labels = rng.integers(0, 10, count)
        noise = rng.integers(0, 90, (count, image_size, image_size), dtype=np.uint8)
        arrays[f"{split}_images"] = np.where(templates[labels], np.uint8(200), noise).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.uint8)[:, None]
    np.savez(path, **arrays)


def paper_schedule(pool: int, initial: int, budget: int, first: int, increment: int) -> list[tuple[int, int]]:
    """(labels, epochs) of every round of a full run: 3,000 -> 25,000 labels, 10 -> 50 epochs."""
    labels = [initial]
    while labels[-1] < pool:
        labels.append(min(labels[-1] + budget, pool))
    return [(n, first + r * increment) for r, n in enumerate(labels)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--rounds", type=int, default=9, help="rounds to run (the full recipe has 9)")
    parser.add_argument("--pool", type=int, default=25_000)
    parser.add_argument("--initial", type=int, default=3_000)
    parser.add_argument("--budget", type=int, default=3_000)
    parser.add_argument("--epochs-first", type=int, default=10)
    parser.add_argument("--epochs-increment", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--heuristic", choices=("coreset", "random"), default="coreset")
    parser.add_argument("--checkpoint-every", choices=("epoch", "round"), default="epoch")
    parser.add_argument(
        "--checkpoint-min-interval",
        type=float,
        default=60.0,
        help="RunCheckpoint.min_interval: seconds (0: every epoch)",
    )
    parser.add_argument(
        "--cuda-graph", choices=("auto", "on", "off"), default="auto", help="the model's cuda_graph (auto: on for CUDA)"
    )
    parser.add_argument(
        "--compile", choices=("auto", "on", "off"), default="auto", help="auto: on for CUDA (without cuda_graph)"
    )
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.initial < 1 or args.budget < 1 or args.pool < args.initial:
        parser.error("--rounds, --initial and --budget must be >= 1 and --pool >= --initial")
    if args.pool > SPLITS["train"]:
        parser.error(f"--pool must be at most the {SPLITS['train']} train images")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device; use --device cpu")
    return args


def run(args: argparse.Namespace, folder: Path) -> tuple[list[dict], float, float, int]:
    """Fits one run; returns (history rows, fit wall seconds, seconds of the final checkpoint, checkpoints written)."""
    npz = Path(tempfile.gettempdir()) / "alvae_bench_mnist_like.npz"
    if not npz.is_file():
        write_mnist_like(npz)
    data = ActiveDataModule(
        NpzSource(str(npz), task="multiclass"),
        pool_size=args.pool,
        initial_labels=args.initial,
        batch_size=args.batch_size,
    )
    choice = {"auto": None, "on": True, "off": False}
    model = TaskModel(
        num_classes=10,
        num_channels=1,
        image_size=28,
        weights=None,
        compile=choice[args.compile],
        cuda_graph=choice[args.cuda_graph],
    )
    max_labels = min(args.initial + (args.rounds - 1) * args.budget, args.pool)
    loop = ActiveLearningLoop(
        heuristic=CoreSet() if args.heuristic == "coreset" else RandomSampling(),
        budget=args.budget,
        max_labels=max_labels,
        epochs_first=args.epochs_first,
        epochs_increment=args.epochs_increment,
    )
    checkpoint = RunCheckpoint(every=args.checkpoint_every, min_interval=args.checkpoint_min_interval)
    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        logger=TensorBoardLogger(save_dir=str(folder), name="bench", version="run"),
        callbacks=[loop, checkpoint],
        # What the loop needs from the Trainer (train.py fills these in): a fresh loader per epoch, no per-epoch
        # validation (every round ends with its own evaluation).
        reload_dataloaders_every_n_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=data)
    wall = time.perf_counter() - started
    recorded = sum(row.get("checkpoint_seconds", 0.0) for row in loop.history)
    return loop.history, wall, checkpoint.save_seconds - recorded, checkpoint.writes


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.out or Path(temporary)
        history, wall, final_checkpoint, writes = run(args, folder)

    device = torch.cuda.get_device_name() if args.device == "cuda" else (platform.processor() or "cpu")
    print(
        f"\nOne run of the paper's MNIST recipe on synthetic MNIST-shaped data: {args.heuristic}, batch "
        f"{args.batch_size}, precision {args.precision}, cuda_graph {args.cuda_graph}, compile {args.compile}, "
        f"checkpoint every {args.checkpoint_every} (at most every {args.checkpoint_min_interval:g} s; {writes} "
        f"written); {args.device} ({device}), torch {torch.__version__}, lightning {L.__version__}\n"
    )
    print("| round | labels | epochs | train s | train img/s | eval s | acquisition s | checkpoint s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in history:
        images = row["labels"] * row["epochs"]
        acquisition = row.get("acquisition_seconds")
        print(
            f"| {row['round']} | {row['labels']:,} | {row['epochs']} | {row['train_seconds']:.2f} | "
            f"{images / row['train_seconds']:,.0f} | {row['eval_seconds']:.2f} | "
            f"{'' if acquisition is None else f'{acquisition:.2f}'} | {row['checkpoint_seconds']:.2f} |"
        )
    parts = {
        "train": sum(r["train_seconds"] for r in history),
        "eval": sum(r["eval_seconds"] for r in history),
        "acquisition": sum(r.get("acquisition_seconds", 0.0) for r in history),
        "checkpoint": sum(r["checkpoint_seconds"] for r in history) + final_checkpoint,
    }
    other = wall - sum(parts.values())
    print(
        f"\nfit wall {wall:.1f} s = train {parts['train']:.1f} + eval {parts['eval']:.1f} + acquisition "
        f"{parts['acquisition']:.1f} + checkpoint {parts['checkpoint']:.1f} + other {other:.1f} (start-up, "
        "compilation outside the first epoch, loader rebuilds, records)"
    )

    # A full run at the measured rates.
    schedule = paper_schedule(args.pool, args.initial, args.budget, args.epochs_first, args.epochs_increment)
    last = history[-1]
    rate = last["labels"] * last["epochs"] / last["train_seconds"]
    # Round 0's first epoch holds the compilation: charge it once, as measured, beyond the steady rate.
    first = history[0]
    compile_extra = max(first["train_seconds"] - first["labels"] * first["epochs"] / rate, 0.0)
    acquisitions = [r["acquisition_seconds"] for r in history if r.get("acquisition_seconds") is not None]
    per_write = parts["checkpoint"] / max(writes, 1)
    full_writes = len(schedule)  # every round's end
    if args.checkpoint_every == "epoch":  # and epochs, at most one per min_interval seconds of training
        by_time = (
            sum(n * e for n, e in schedule) / rate / args.checkpoint_min_interval
            if args.checkpoint_min_interval
            else math.inf
        )
        full_writes = min(sum(e for _, e in schedule), len(schedule) + int(by_time))
    full = {
        "train": sum(n * e for n, e in schedule) / rate + compile_extra,
        "eval": parts["eval"] / len(history) * len(schedule),
        "acquisition": (sum(acquisitions) / len(acquisitions) if acquisitions else 0.0) * (len(schedule) - 1),
        "checkpoint": per_write * full_writes,
        "other": other,
    }
    run_seconds = sum(full.values())
    measured = "measured" if len(history) == len(schedule) else "extrapolated from the rounds above"
    print(
        f"\nFull run ({len(schedule)} rounds, {sum(n * e for n, e in schedule) / 1e6:.2f} M training images), "
        f"{measured}: {run_seconds:.0f} s = " + " + ".join(f"{k} {v:.0f}" for k, v in full.items())
    )
    print(
        f"The paper's MNIST experiment, {RUNS} such runs one after another: {RUNS * run_seconds / 60:.1f} min "
        f"(training at {rate:,.0f} img/s)."
    )


if __name__ == "__main__":
    main()
