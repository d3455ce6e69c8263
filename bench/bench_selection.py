"""Time and peak memory of core-set and MedAL selection against straightforward reference code.

    python bench/bench_selection.py [--sizes 10000 30000 100000 300000] [--dim 544] [--budget 3000] [--labeled 3000]

Every case (method x pool size x implementation) runs in a fresh subprocess, so that its peak resident memory
(``ru_maxrss``) is its own; "peak MiB" is that peak minus the resident memory just before selection started,
with the features already in memory, i.e. an upper bound on what the selection itself allocated.

The references are what common active-learning code does, with one ``sklearn.metrics.pairwise_distances`` call
per pick on the same float32 features:

- core-set (google/active-learning ``kcenter_greedy`` style): nearest distances from ``pairwise_distances(pool,
  labeled).min(1)`` (an ``n x m`` matrix), then ``np.minimum`` with ``pairwise_distances(pool, new_center)`` per
  pick;
- MedAL (naive): each pick recomputes the mean distance of every candidate to the whole labeled set.

References stop after ``--ref-picks`` picks or ``--ref-seconds`` of picking, whichever comes first, and their total
is extrapolated to the budget (core-set: linearly; MedAL: in proportion to the labeled-set size of each pick,
which grows from ``m`` to ``m + budget``). Such totals are marked "extrapolated". Each reference's picks are
checked against the first picks of ours on the same data ("agree" column).

Features (``--data``): ``clustered``, the ReLU of a 20-cluster Gaussian mixture (like a trained classifier's
embeddings), or ``isotropic``, standard normal; float32, seeded; labeled points come from the same distribution.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import pairwise_distances

METHODS = ("coreset", "medal")
REPO_ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without installing the package.
sys.path.insert(0, str(REPO_ROOT))

from alvae_pl.acquisition.coreset import k_center_greedy  # noqa: E402
from alvae_pl.acquisition.medal import greedy_mean_distance  # noqa: E402


def make_features(n: int, m: int, dim: int, data: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool ``[n, dim]`` and labeled ``[m, dim]`` float32 features, filled in chunks (no big temporaries).

    ``clustered``: ReLU of a 20-component Gaussian mixture, like a trained classifier's embeddings;
    ``isotropic``: standard normal, no structure at all.
    """
    generator = torch.Generator().manual_seed(seed)
    clusters = torch.randn(20, dim, generator=generator) * 2
    points = torch.empty(n + m, dim)
    for start in range(0, n + m, 8192):
        rows = points[start : start + 8192]
        if data == "isotropic":
            torch.randn(rows.shape, generator=generator, out=rows)
        else:
            labels = torch.randint(len(clusters), (len(rows),), generator=generator)
            rows.copy_((clusters[labels] + torch.randn(len(rows), dim, generator=generator)).relu_())
    return points[:n], points[n:]


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def ours(method: str, pool: torch.Tensor, labeled: torch.Tensor, budget: int) -> dict:
    select = k_center_greedy if method == "coreset" else greedy_mean_distance
    start = time.perf_counter()
    selection = select(pool, labeled, budget, torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "picks": selection.positions.tolist(), "timed_picks": budget, "extrapolated": False}


def reference_coreset(pool: np.ndarray, labeled: np.ndarray, budget: int, max_picks: int, max_seconds: float) -> dict:
    start = time.perf_counter()
    min_distances = pairwise_distances(pool, labeled).min(axis=1).reshape(-1, 1)
    setup = time.perf_counter() - start
    picks: list[int] = []
    while len(picks) < min(budget, max_picks) and time.perf_counter() - start - setup < max_seconds:
        pick = int(np.argmax(min_distances))
        picks.append(pick)
        min_distances = np.minimum(min_distances, pairwise_distances(pool, pool[[pick]]))
    picking = time.perf_counter() - start - setup
    total = setup + picking / len(picks) * budget
    return {"seconds": total, "picks": picks, "timed_picks": len(picks), "extrapolated": len(picks) < budget}


def reference_medal(pool: np.ndarray, labeled: np.ndarray, budget: int, max_picks: int, max_seconds: float) -> dict:
    start = time.perf_counter()
    picks: list[int] = []
    while len(picks) < min(budget, max_picks) and time.perf_counter() - start < max_seconds:
        members = np.concatenate([labeled, pool[picks]])
        mean_distance = pairwise_distances(pool, members).mean(axis=1)
        mean_distance[picks] = -np.inf
        picks.append(int(np.argmax(mean_distance)))
    picking = time.perf_counter() - start
    # A pick's cost is proportional to the labeled-set size it measures against: m, m + 1, ..., m + budget - 1.
    m = len(labeled)
    timed_work = sum(m + i for i in range(len(picks)))
    total_work = sum(m + i for i in range(budget))
    total = picking / timed_work * total_work
    return {"seconds": total, "picks": picks, "timed_picks": len(picks), "extrapolated": len(picks) < budget}


def run_case(args: argparse.Namespace) -> None:
    """Worker: one implementation on one pool, printing a JSON line."""
    pool, labeled = make_features(args.size, args.labeled, args.dim, args.data)
    rss_before = current_rss_mib()
    if args.impl == "ours":
        result = ours(args.method, pool, labeled, args.budget)
    else:
        reference = reference_coreset if args.method == "coreset" else reference_medal
        result = reference(pool.numpy(), labeled.numpy(), args.budget, args.ref_picks, args.ref_seconds)
    result["peak_mib"] = max(peak_rss_mib() - rss_before, 0.0)
    print(json.dumps(result))


def spawn(method: str, impl: str, size: int, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--worker", method, impl, "--size", str(size), "--dim", str(args.dim),
        "--budget", str(args.budget), "--labeled", str(args.labeled), "--ref-picks", str(args.ref_picks),
        "--ref-seconds", str(args.ref_seconds), "--data", args.data,
    ]  # fmt: skip
    env = dict(os.environ)
    if args.threads:
        # BLAS and OpenMP pools read these at start-up, which is one more reason to run each case in a fresh process.
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(args.threads)
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{method}/{impl}/{size} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000, 300_000])
    parser.add_argument("--dim", type=int, default=544, help="512 task + 32 VAE features")
    parser.add_argument("--budget", type=int, default=3000)
    parser.add_argument("--labeled", type=int, default=3000)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--ref-picks", type=int, default=50, help="most picks a reference makes before extrapolating")
    parser.add_argument("--ref-seconds", type=float, default=30.0, help="most seconds a reference spends picking")
    parser.add_argument("--data", choices=("clustered", "isotropic"), default="clustered", help="feature distribution")
    parser.add_argument("--threads", type=int, default=0, help="threads for torch and BLAS (default: all cores)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.method, args.impl = args.worker
        run_case(args)
        return

    print(
        f"torch {torch.__version__}, {args.threads or os.cpu_count()} threads, {platform.machine()}, "
        f"{os.cpu_count()} cores; {args.data} features, dim {args.dim}, budget {args.budget}, labeled {args.labeled}\n"
    )
    columns = ["method", "pool size", "ours s", "reference s", "speedup", "our peak MiB", "reference peak MiB"]
    columns += ["features MiB", "agree"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for method in args.methods:
        for size in args.sizes:
            ours_result = spawn(method, "ours", size, args)
            reference = spawn(method, "reference", size, args)
            k = reference["timed_picks"]
            agree = ours_result["picks"][:k] == reference["picks"]
            reference_seconds = f"{reference['seconds']:.1f}"
            if reference["extrapolated"]:
                reference_seconds += f" (extrapolated from {k} picks)"
            print(
                f"| {method} | {size} | {ours_result['seconds']:.1f} | {reference_seconds} | "
                f"{reference['seconds'] / ours_result['seconds']:.1f}x | {ours_result['peak_mib']:.0f} | "
                f"{reference['peak_mib']:.0f} | {size * args.dim * 4 / 2**20:.0f} | "
                f"{'yes' if agree else 'NO'} ({k} picks) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
