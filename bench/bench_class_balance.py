"""Is the batch lopsided? Entropy and core-set with and without ClassBalanced on a long-tailed digits pool.

    python bench/bench_class_balance.py [--imbalance-ratio 10] [--seeds 0 1 2] [--width 64] [--out /tmp/class_balance]

Each variant is one ``train.py fit`` (run in this process) of the digits demo recipe on the long-tailed train split
(``data.source.init_args.imbalance_ratio``: digit 9 ten times rarer than digit 0; validation and test stay
balanced): 50 initial labels drawn at random, 50 per round up to 200, ResNet-18 from scratch (``--width 8``: the
tests' narrow one, minutes faster). Prints, per variant and summed over the seeds, the true digits of all acquired
images (rounds 1-3, what the oracle was asked to label), how many of them are rare digits (5-9, 21% of the pool),
the smallest and largest digit's share, and the last round's validation accuracy and balanced accuracy (mean over
seeds).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing the package

from alvae_pl.cli import main  # noqa: E402
from alvae_pl.data.sources import DigitsSource  # noqa: E402

VARIANTS = {
    "entropy": ("digits_entropy.yaml", None),
    "entropy + ClassBalanced": ("digits_entropy.yaml", "class_balanced_entropy.yaml"),
    "coreset": ("digits_coreset.yaml", None),
    "coreset + ClassBalanced": ("digits_coreset.yaml", "class_balanced_coreset.yaml"),
}


def run(config: str, heuristic: str | None, folder: Path, ratio: float, seed: int, width: int) -> Path:
    """One run of ``config`` (with the heuristic overlay) under ``folder``; returns its run folder."""
    arguments = ["fit", "--config", str(REPO_ROOT / "configs" / config)]
    if heuristic is not None:
        arguments += ["--config", str(REPO_ROOT / "configs" / "heuristics" / heuristic)]
    arguments += [
        f"--trainer.logger.init_args.save_dir={folder}",
        f"--trainer.logger.init_args.version=seed_{seed}",
        f"--seed_everything={seed}",
        f"--data.pool_seed={seed}",
        f"--data.source.init_args.imbalance_ratio={ratio}",
        f"--model.init_args.width={width}",
        "--data.initial_labels=50",
        "--active.budget=50",
        "--active.max_labels=200",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        main(arguments)
    return folder / Path(config).stem / f"seed_{seed}"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imbalance-ratio", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("/tmp/class_balance"))
    options = parser.parse_args()
    targets = DigitsSource(imbalance_ratio=options.imbalance_ratio).load().train.targets.numpy()
    print(f"long-tailed train split: {np.bincount(targets, minlength=10).tolist()} images of digits 0-9")
    print(f"acquired images (3 rounds of 50, seeds {options.seeds}), summed over seeds")
    print("| variant | digits 0-9 acquired | rare (5-9) | min / max digit | val acc | val balanced acc |")
    print("|---|---|---|---|---|---|")
    for name, (config, heuristic) in VARIANTS.items():
        histogram = np.zeros(10, dtype=np.int64)
        accuracy, balanced = [], []
        for seed in options.seeds:
            folder = options.out / name.replace(" + ", "_").replace(" ", "_")
            run_folder = run(config, heuristic, folder, options.imbalance_ratio, seed, options.width)
            rows = read_csv(run_folder / "labeled.csv")
            acquired = [int(row["dataset_index"]) for row in rows if row["round"] != "0"]
            histogram += np.bincount(targets[acquired], minlength=10)
            last = read_csv(run_folder / "history.csv")[-1]
            accuracy.append(float(last["val_accuracy"]))
            balanced.append(float(last["val_balanced_accuracy"]))
        rare = histogram[5:].sum() / histogram.sum()
        print(
            f"| {name} | {histogram.tolist()} | {rare:.2f} | {histogram.min()} / {histogram.max()} | "
            f"{np.mean(accuracy):.3f} | {np.mean(balanced):.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main_bench()
