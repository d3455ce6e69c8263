"""Time and peak memory of core-set, MedAL and BADGE selection against straightforward reference code (and of
TypiClust and ProbCover, without one).

    python bench/bench_selection.py [--sizes 10000 30000 100000 300000] [--dim 544] [--budget 3000] [--labeled 3000]
        [--device cpu|cuda] [--algorithms auto|lazy|dense ...] [--no-reference] [--feature-dtype float16]

Every case (method x pool size x implementation) runs in a fresh subprocess, so that its peak resident memory
(``ru_maxrss``) is its own; "peak MiB" is that peak minus the resident memory just before selection started,
with the features already in memory, i.e. an upper bound on what the selection itself allocated.

``--device cuda`` times ours on the GPU: the features are made on the CPU as always, moved to the GPU before the
clock starts, and a small selection first warms up CUDA and cuBLAS; the clock stops after
``torch.cuda.synchronize()``. "peak MiB" is then GPU memory: ``torch.cuda.max_memory_allocated`` (reset just
before selection) minus what was allocated then (the features), i.e. what the selection itself allocated at its
peak. The references always run on the CPU, as a CPU baseline for the GPU time ("speedup" compares the two);
``--no-reference`` skips them, e.g. for a quick GPU check (18 s in all on an H200, most of it making features)::

    python bench/bench_selection.py --device cuda --sizes 300000 --no-reference

``--algorithms`` picks core-set's k-center algorithm, one row each: ``auto`` (lazy on the CPU, dense on a GPU),
``lazy`` or ``dense`` (see ``alvae_pl.acquisition.coreset.k_center_greedy``); the "algorithm" column says which
ran. MedAL has one algorithm, a dense pass per pick. To learn which k-center algorithm is faster on a GPU::

    python bench/bench_selection.py --device cuda --sizes 300000 --no-reference \\
        --methods coreset --algorithms lazy dense

The references are what common active-learning code does, with one ``sklearn.metrics.pairwise_distances`` call
per pick on the same float32 features:

- core-set (google/active-learning ``kcenter_greedy`` style): nearest distances from ``pairwise_distances(pool,
  labeled).min(1)`` (an ``n x m`` matrix), then ``np.minimum`` with ``pairwise_distances(pool, new_center)`` per
  pick;
- MedAL (naive): each pick recomputes the mean distance of every candidate to the whole labeled set;
- BADGE (its authors' code): explicit gradient embeddings ``[n, 10 * dim]`` (10 classes), then k-means++ with one
  ``pairwise_distances`` per pick. Ours keeps them factored (``alvae_pl.acquisition.badge.GradientEmbeddings``):
  ``n (10 + dim)`` numbers. Both draw the same uniforms, so the picks agree. BADGE ignores ``--labeled``. For the
  issue's figure, 30,000 candidates of the task model's 512-d embedding::

    python bench/bench_selection.py --methods badge --sizes 30000 --dim 512

References stop after ``--ref-picks`` picks or ``--ref-seconds`` of picking, whichever comes first, and their total
is extrapolated to the budget (core-set: linearly; MedAL: in proportion to the labeled-set size of each pick,
which grows from ``m`` to ``m + budget``). Such totals are marked "extrapolated". Each reference's picks are
checked against the first picks of ours on the same data ("agree" column).

TypiClust and ProbCover (``--methods typiclust probcover``) have no reference row: a dense one needs the
``N x N`` distance matrix (36 GiB at 100,000). TypiClust clusters the pool and the labeled set into
``min(labeled + budget, 500)`` clusters (mini-batch k-means) and measures every point's typicality (one chunked
k-nearest-neighbour pass); ProbCover builds its sparse ball graph on the L2-normalised points and covers greedily,
with ``--delta`` fixed or, by default, chosen by purity (one more chunked pass, and a 10-cluster k-means); its
"algorithm" column gives the radius and the graph's edges::

    python bench/bench_selection.py --sizes 30000 300000 --methods typiclust probcover --threads 1

Both measure all ``N^2 / 2`` distances, so at 300,000 x 544 they take many minutes on one CPU thread (a GPU runs
the distance blocks). To see ProbCover's graph stay sparse at 300,000 quickly, use few dimensions and a fixed
radius (17 million edges, 362 MiB, 3 minutes on one thread)::

    python bench/bench_selection.py --sizes 300000 --methods probcover --threads 1 --dim 16 --delta 0.2

Pools up to a million candidates run on the CPU in minutes with one thread for core-set (a million x 544 float32
features is 2 GiB, and about as much again for the centred copy); after the table, each method's growth exponents
are printed: the least-squares slope of log CPU time (on a shared machine wall time depends on the neighbours; ours
on the CPU is "ours CPU s", process time, all threads) and of log peak memory against log pool size (1: linear; constant
costs pull it below 1 at small sizes). ``--feature-dtype float16`` (or ``bfloat16``) makes our features in that
precision, as ``feature_dtype`` of the heuristics keeps them, to see the memory halve (the references stay float32)::

    python bench/bench_selection.py --sizes 30000 100000 300000 1000000 --methods coreset --no-reference --threads 1
    python bench/bench_selection.py --sizes 1000000 --methods coreset --no-reference --threads 1 --feature-dtype float16
    python bench/bench_selection.py --sizes 30000 100000 300000 1000000 --methods badge --no-reference --threads 1 \
        --budget 300

Features (``--data``): ``clustered``, the ReLU of a 20-cluster Gaussian mixture (like a trained classifier's
embeddings), or ``isotropic``, standard normal; float32, seeded; labeled points come from the same distribution.
"""

from __future__ import annotations

import argparse
import functools
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

METHODS = ("coreset", "medal", "badge", "typiclust", "probcover")
#: Methods with no reference implementation to compare with.
WITHOUT_REFERENCE = ("typiclust", "probcover")
BADGE_CLASSES = 10  # K of the gradient embeddings: MNIST's classes
REPO_ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without installing the package.
sys.path.insert(0, str(REPO_ROOT))

from alvae_pl.acquisition.badge import GradientEmbeddings, gradient_scale, kmeans_plus_plus  # noqa: E402
from alvae_pl.acquisition.coreset import ALGORITHMS, choose_algorithm, k_center_greedy  # noqa: E402
from alvae_pl.acquisition.distances import FEATURE_DTYPES  # noqa: E402
from alvae_pl.acquisition.medal import greedy_mean_distance  # noqa: E402
from alvae_pl.acquisition.probcover import (  # noqa: E402
    DEFAULT_PURITY_CLUSTERS,
    ball_graph,
    choose_delta,
    greedy_max_coverage,
    normalize_rows,
)
from alvae_pl.acquisition.typiclust import cluster_labels, combine_points, typiclust  # noqa: E402


def make_features(
    n: int, m: int, dim: int, data: str, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool ``[n, dim]`` and labeled ``[m, dim]`` features in ``dtype``, filled in chunks (no big temporaries, so
    that the peak before selection is the features themselves).

    ``clustered``: ReLU of a 20-component Gaussian mixture, like a trained classifier's embeddings;
    ``isotropic``: standard normal, no structure at all.
    """
    generator = torch.Generator().manual_seed(seed)
    clusters = torch.randn(20, dim, generator=generator) * 2
    points = torch.empty(n + m, dim, dtype=dtype)
    for start in range(0, n + m, 8192):
        rows = points[start : start + 8192]
        if data == "isotropic":
            rows.copy_(torch.randn(rows.shape, generator=generator))
        else:
            labels = torch.randint(len(clusters), (len(rows),), generator=generator)
            rows.copy_((clusters[labels] + torch.randn(len(rows), dim, generator=generator)).relu_())
    return points[:n], points[n:]


def make_badge_inputs(
    n: int, dim: int, data: str, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """BADGE's inputs: gradient scales ``[n, K]`` (softmax minus the predicted one-hot of seeded logits) and
    embeddings ``[n, dim]`` (``make_features``'s pool), in ``dtype``."""
    embedding, _ = make_features(n, 0, dim, data, seed, dtype)
    logits = torch.randn(n, BADGE_CLASSES, generator=torch.Generator().manual_seed(seed + 1)) * 3
    return gradient_scale(logits, multilabel=False).to(dtype), embedding


def growth_exponent(sizes: list[int], values: list[float]) -> float:
    """The slope of ``log value`` against ``log size`` (least squares): 1 for linear growth, 2 for quadratic."""
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(values, 1e-9)), 1)[0])


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def prob_cover_steps(
    pool: torch.Tensor, labeled: torch.Tensor, budget: int, generator: torch.Generator, delta: float | None
) -> tuple:
    """``alvae_pl.acquisition.probcover.prob_cover`` step by step, to report the radius and the graph's size."""
    points = normalize_rows(combine_points(pool, labeled, budget))
    if delta is None:
        seed = int(torch.randint(2**31 - 1, (), generator=generator))
        delta = choose_delta(points, cluster_labels(points, DEFAULT_PURITY_CLUSTERS, seed))
    graph = ball_graph(points, delta)
    selection = greedy_max_coverage(graph, len(labeled), budget, generator)
    return selection, f"delta={delta:g} ({'fixed' if BENCH_DELTA is not None else 'by purity'}), {graph.nnz:,} edges"


#: ``--delta`` of a worker (None: chosen by purity).
BENCH_DELTA: float | None = None


def ours(method: str, algorithm: str, pool: torch.Tensor, labeled: torch.Tensor, budget: int) -> dict:
    """Times one selection on the features' device; on CUDA also measures its GPU memory ("peak_mib")."""
    if method == "probcover":
        if pool.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            allocated_before = torch.cuda.memory_allocated()
        start, cpu_start = time.perf_counter(), time.process_time()
        selection, ran = prob_cover_steps(pool, labeled, budget, torch.Generator().manual_seed(0), BENCH_DELTA)
        seconds = time.perf_counter() - start
        result = {"seconds": seconds, "picks": selection.positions.tolist(), "algorithm": ran}
        result["cpu_seconds"] = time.process_time() - cpu_start
        if pool.device.type == "cuda":
            result["peak_mib"] = (torch.cuda.max_memory_allocated() - allocated_before) / 2**20
        return result
    if method == "typiclust":
        select, ran = typiclust, "k-means + chunked kNN"
    elif method == "coreset":
        select = functools.partial(k_center_greedy, algorithm=algorithm)
        ran = choose_algorithm(algorithm, pool.device)
    elif (
        method == "badge"
    ):  # ``pool``: the gradient scales, ``labeled``: the embeddings (BADGE ignores the labeled set)

        def select(scale: torch.Tensor, embedding: torch.Tensor, budget: int, generator: torch.Generator):
            return kmeans_plus_plus(GradientEmbeddings(scale, embedding), budget, generator)

        ran = "factored k-means++"
    else:
        select, ran = greedy_mean_distance, "dense"
    cuda = pool.device.type == "cuda"
    if cuda:
        # CUDA context, cuBLAS handles and lazily loaded kernels cost far more than a selection's first picks.
        warm_labeled = labeled[:4096] if method == "badge" else labeled[:1024]  # BADGE: scales and embeddings pair up
        select(pool[:4096], warm_labeled, 8, torch.Generator().manual_seed(0))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
    start, cpu_start = time.perf_counter(), time.process_time()
    selection = select(pool, labeled, budget, torch.Generator().manual_seed(0))
    if cuda:
        torch.cuda.synchronize()  # the selection returns CPU tensors, so this is belt and braces
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "picks": selection.positions.tolist(), "timed_picks": budget, "extrapolated": False}
    result["cpu_seconds"] = time.process_time() - cpu_start
    result["algorithm"] = ran
    if cuda:
        result["peak_mib"] = (torch.cuda.max_memory_allocated() - allocated_before) / 2**20
    return result


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


def reference_badge(scale: np.ndarray, embedding: np.ndarray, budget: int, max_picks: int, max_seconds: float) -> dict:
    """BADGE as its reference code does it: explicit gradient embeddings ``[n, K * dim]``, then k-means++ with one
    ``pairwise_distances`` call per pick (same first pick, uniforms and inverse-CDF rule as ours)."""
    start = time.perf_counter()
    points = (scale[:, :, None] * embedding[:, None, :]).reshape(len(scale), -1)
    uniforms = torch.rand(budget, generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    picks = [int(np.argmax((points**2).sum(axis=1)))]
    nearest = pairwise_distances(points, points[picks[:1]]).ravel().astype(np.float64) ** 2
    setup = time.perf_counter() - start
    while len(picks) < min(budget, max_picks) and time.perf_counter() - start - setup < max_seconds:
        weights = nearest.copy()
        weights[picks] = 0
        cumulative = np.cumsum(weights)
        pick = min(
            int(np.searchsorted(cumulative, uniforms[len(picks)] * cumulative[-1], side="right")), len(scale) - 1
        )
        picks.append(pick)
        nearest = np.minimum(nearest, pairwise_distances(points, points[[pick]]).ravel().astype(np.float64) ** 2)
    picking = time.perf_counter() - start - setup
    total = setup + picking / len(picks) * budget
    return {"seconds": total, "picks": picks, "timed_picks": len(picks), "extrapolated": len(picks) < budget}


def run_case(args: argparse.Namespace) -> None:
    """Worker: one implementation on one pool, printing a JSON line."""
    global BENCH_DELTA
    BENCH_DELTA = args.delta
    dtype = FEATURE_DTYPES[args.feature_dtype] if args.impl == "ours" else torch.float32
    if args.method == "badge":
        pool, labeled = make_badge_inputs(args.size, args.dim, args.data, dtype=dtype)
    else:
        pool, labeled = make_features(args.size, args.labeled, args.dim, args.data, dtype=dtype)
    if args.impl == "ours" and args.device != "cpu":
        pool, labeled = pool.to(args.device), labeled.to(args.device)
    rss_before = current_rss_mib()
    if args.impl == "ours":
        result = ours(args.method, args.algorithm, pool, labeled, args.budget)
    else:
        reference = {"coreset": reference_coreset, "medal": reference_medal, "badge": reference_badge}[args.method]
        result = reference(pool.numpy(), labeled.numpy(), args.budget, args.ref_picks, args.ref_seconds)
    result.setdefault("peak_mib", max(peak_rss_mib() - rss_before, 0.0))
    print(json.dumps(result))


def spawn(method: str, impl: str, size: int, args: argparse.Namespace, algorithm: str = "auto") -> dict:
    command = [
        sys.executable, __file__, "--worker", method, impl, "--size", str(size), "--dim", str(args.dim),
        "--budget", str(args.budget), "--labeled", str(args.labeled), "--ref-picks", str(args.ref_picks),
        "--ref-seconds", str(args.ref_seconds), "--data", args.data, "--device", args.device,
        "--algorithm", algorithm, *(["--delta", str(args.delta)] if args.delta is not None else []),
        "--feature-dtype", args.feature_dtype,
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
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where ours runs (references: CPU)")
    parser.add_argument(
        "--algorithms", nargs="+", choices=ALGORITHMS, default=["auto"], help="core-set's k-center algorithm(s)"
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the (CPU, sklearn) references")
    parser.add_argument("--delta", type=float, help="ProbCover's radius (default: chosen by purity)")
    parser.add_argument(
        "--feature-dtype", choices=sorted(FEATURE_DTYPES), default="float32", help="precision ours keeps features in"
    )
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.method, args.impl = args.worker
        run_case(args)
        return

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.machine()} CPU"
    print(
        f"torch {torch.__version__}, ours on {device}; {args.threads or os.cpu_count()} threads, {os.cpu_count()} "
        f"cores; {args.data} features ({args.feature_dtype}), dim {args.dim}, budget {args.budget}, "
        f"labeled {args.labeled}\n"
    )
    columns = ["method", "algorithm", "pool size", "ours s", "ours CPU s", "reference s (CPU)", "speedup"]
    columns += ["our peak MiB"]
    columns += ["reference peak MiB", "features MiB", "agree"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    measured: dict[tuple[str, str], list[tuple[int, float, float]]] = {}  # (method, algorithm) -> (n, s, MiB)
    for method in args.methods:
        for size in args.sizes:
            # One reference per pool, shared by the rows of every algorithm.
            skip_reference = args.no_reference or method in WITHOUT_REFERENCE
            reference = None if skip_reference else spawn(method, "reference", size, args)
            for algorithm in args.algorithms if method == "coreset" else ["auto"]:
                ours_result = spawn(method, "ours", size, args, algorithm)
                # On a shared machine wall time depends on the neighbours; one thread's CPU time much less.
                measured.setdefault((method, ours_result["algorithm"]), []).append(
                    (size, ours_result.get("cpu_seconds", ours_result["seconds"]), ours_result["peak_mib"])
                )
                cells = [method, ours_result["algorithm"], str(size), f"{ours_result['seconds']:.2f}"]
                cpu_seconds = ours_result.get("cpu_seconds")
                cells.append("-" if cpu_seconds is None else f"{cpu_seconds:.2f}")
                if reference is None:
                    cells += ["-", "-", f"{ours_result['peak_mib']:.0f}", "-"]
                else:
                    k = reference["timed_picks"]
                    reference_seconds = f"{reference['seconds']:.1f}"
                    if reference["extrapolated"]:
                        reference_seconds += f" (extrapolated from {k} picks)"
                    cells += [reference_seconds, f"{reference['seconds'] / ours_result['seconds']:.1f}x"]
                    cells += [f"{ours_result['peak_mib']:.0f}", f"{reference['peak_mib']:.0f}"]
                width = args.dim + (BADGE_CLASSES if method == "badge" else 0)
                cells.append(f"{size * width * FEATURE_DTYPES[args.feature_dtype].itemsize / 2**20:.0f}")
                if reference is None:
                    cells.append("-")
                else:
                    agree = ours_result["picks"][:k] == reference["picks"]
                    cells.append(f"{'yes' if agree else 'NO'} ({k} picks)")
                print("| " + " | ".join(cells) + " |", flush=True)
    # How time and memory grow with the pool: about 1 for what is linear in n (constant costs pull it below 1 at
    # small sizes), 2 for what is quadratic.
    for (method, algorithm), rows in measured.items():
        if len({size for size, _, _ in rows}) > 1:
            sizes = [size for size, _, _ in rows]
            time_slope = growth_exponent(sizes, [seconds for _, seconds, _ in rows])
            memory_slope = growth_exponent(sizes, [mib for _, _, mib in rows])
            print(f"\n{method} ({algorithm}), pool {min(sizes):,} to {max(sizes):,}: "
                  f"CPU time grows as n^{time_slope:.2f}, peak memory as n^{memory_slope:.2f}", end="")  # fmt: skip
    print()


if __name__ == "__main__":
    main()
