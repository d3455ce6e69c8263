"""Exact core-set against its SEALS-style approximation (``NearestCandidates``): covering radius on digits, and
selection time and candidates at 100,000 to 1,000,000 synthetic points.

    python bench/bench_approximate_selection.py radius [--seeds 5] [--neighbours 2 5 10]
    python bench/bench_approximate_selection.py time [--sizes 100000 300000 1000000] [--dim 64] [--labeled 1000]
        [--budget 1000] [--neighbours 10] [--threads 1] [--search auto|faiss|sklearn]

``radius``: scikit-learn's digits (1,797 images, 8 x 8) as the pool, with the pixels (scaled to [0, 1], 64-d) as the
one feature space of both the neighbour search and core-set, so that only the restriction of the candidates differs.
100 random initial labels (seeded), then 3 rounds of 100 picks: exact core-set among every unlabeled image, core-set
among the ``NearestCandidates`` of the round (each labeled image's k nearest unlabeled ones; at least the budget,
topped up at random), core-set among a uniform random subset of the unlabeled images of about as many
(``--subsets``, learning loss's ``subset_size``), and random picks. The table gives the covering radius
``max_u min_l ||u - l||`` of the labeled set after each round (``alvae_pl.analysis.covering_radius``; lower covers
better), mean and standard deviation over the seeds, and the mean number of candidates per round. Under a minute.

``time``: ``--sizes`` points of the clustered features of ``bench/bench_selection.py`` (ReLU of a 20-cluster Gaussian
mixture), ``--labeled`` of them labeled; one round of ``--budget`` picks. Exact: k-center greedy over every unlabeled
point. Approximate: the neighbour search of the labeled set among the unlabeled (``nearest_neighbours``), then
k-center greedy over those candidates. Both in the same features, wall-clock seconds on this process's threads
(``--threads``). The column "embedded" is what the task model would have to embed that round: every unlabeled image
for the exact one, the candidates for the approximation, which in a real run is most of the saving (a forward pass
of the ResNet per image), on top of the selection time measured here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing the package
sys.path.insert(0, str(REPO_ROOT / "bench"))

from bench_selection import make_features  # noqa: E402

from alvae_pl.acquisition.coreset import k_center_greedy  # noqa: E402
from alvae_pl.acquisition.nearest_candidates import faiss_available, nearest_neighbours  # noqa: E402
from alvae_pl.analysis.covering_radius import covering_radius  # noqa: E402


def nearest_candidates(
    features: torch.Tensor, labeled: torch.Tensor, unlabeled: torch.Tensor, k: int, minimum: int, seed: int
) -> torch.Tensor:
    """What ``NearestCandidates.candidates`` gives: the labeled set's ``k`` nearest unlabeled images (positions),
    topped up at random to ``minimum``, ascending."""
    near = unlabeled[torch.unique(nearest_neighbours(features[labeled], features[unlabeled], k))]
    missing = minimum - len(near)
    if missing > 0:
        others = unlabeled[~torch.isin(unlabeled, near)]
        drawn = others[torch.randperm(len(others), generator=torch.Generator().manual_seed(seed))[:missing]]
        near = torch.cat([near, drawn]).sort().values
    return near


def radius(args: argparse.Namespace) -> None:
    features = torch.from_numpy(load_digits().data).float() / 16
    n = len(features)
    nearest = [f"nearest k={k}" for k in args.neighbours]
    methods = ["exact", *nearest, *(f"subset c={c}" for c in args.subsets), "random"]
    radii = {method: [[] for _ in range(args.rounds + 1)] for method in methods}
    sizes: dict[str, list[int]] = {method: [] for method in methods}
    for seed in range(args.seeds):
        initial = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: args.initial]
        for method in methods:
            labeled = initial.clone()
            radii[method][0].append(covering_radius(features, features[labeled]))
            for round_index in range(1, args.rounds + 1):
                is_labeled = torch.zeros(n, dtype=torch.bool)
                is_labeled[labeled] = True
                unlabeled = (~is_labeled).nonzero().squeeze(1)
                if method == "random":
                    generator = torch.Generator().manual_seed(1000 * seed + round_index)
                    picks = unlabeled[torch.randperm(len(unlabeled), generator=generator)[: args.budget]]
                else:
                    candidates = unlabeled
                    if method.startswith("nearest"):
                        k = int(method.split("=")[1])
                        candidates = nearest_candidates(features, labeled, unlabeled, k, args.budget, seed)
                    elif method.startswith("subset"):  # as many candidates, drawn at random (learning loss's subset)
                        generator = torch.Generator().manual_seed(1000 * seed + round_index)
                        chosen = torch.randperm(len(unlabeled), generator=generator)[: int(method.split("=")[1])]
                        candidates = unlabeled[chosen.sort().values]
                    sizes[method].append(len(candidates))
                    chosen = k_center_greedy(features[candidates], features[labeled], args.budget).positions
                    picks = candidates[chosen]
                labeled = torch.cat([labeled, picks])
                radii[method][round_index].append(covering_radius(features, features[labeled]))
    labels = [args.initial + args.budget * r for r in range(args.rounds + 1)]
    print(f"digits pixels (1,797 x 64), covering radius after each round, mean ± sd over {args.seeds} seeds")
    print(f"| method | candidates / round | {' | '.join(f'{m} labels' for m in labels)} |")
    print(f"|---|---:|{'---:|' * len(labels)}")
    for method in methods:
        cells = [f"{statistics.mean(r):.3f} ± {statistics.stdev(r) if len(r) > 1 else 0:.3f}" for r in radii[method]]
        mean_size = f"{statistics.mean(sizes[method]):.0f}" if sizes[method] else "-"
        print(f"| {method} | {mean_size} | {' | '.join(cells)} |")


def timing(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    search = args.search if args.search != "auto" else ("faiss" if faiss_available() else "sklearn")
    if search == "faiss":
        import faiss

        faiss.omp_set_num_threads(args.threads)  # faiss runs its own OpenMP threads, which torch's setting misses
    print(
        f"{args.dim}-d clustered features, {args.labeled} labeled, {args.budget} picks, k={args.neighbours}, "
        f"search {search}, {args.threads} thread(s)"
    )
    print("| pool | exact s | embedded (exact) | search s | core-set on candidates s | approx. total s | embedded |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        pool, labeled = make_features(size, args.labeled, args.dim, "clustered")
        start = time.perf_counter()
        k_center_greedy(pool, labeled, args.budget)
        exact = time.perf_counter() - start
        start = time.perf_counter()
        near = torch.unique(nearest_neighbours(labeled, pool, args.neighbours, search))
        searched = time.perf_counter() - start
        start = time.perf_counter()
        k_center_greedy(pool[near], labeled, min(args.budget, len(near)))
        greedy = time.perf_counter() - start
        print(
            f"| {size:,} | {exact:.2f} | {size:,} | {searched:.2f} | {greedy:.2f} | {searched + greedy:.2f} "
            f"| {len(near):,} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    radius_parser = commands.add_parser("radius")
    radius_parser.add_argument("--seeds", type=int, default=5)
    radius_parser.add_argument("--neighbours", type=int, nargs="+", default=[2, 5, 10])
    radius_parser.add_argument("--subsets", type=int, nargs="*", default=[300, 600])
    radius_parser.add_argument("--initial", type=int, default=100)
    radius_parser.add_argument("--budget", type=int, default=100)
    radius_parser.add_argument("--rounds", type=int, default=3)
    time_parser = commands.add_parser("time")
    time_parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    time_parser.add_argument("--dim", type=int, default=64)
    time_parser.add_argument("--labeled", type=int, default=1000)
    time_parser.add_argument("--budget", type=int, default=1000)
    time_parser.add_argument("--neighbours", type=int, default=10)
    time_parser.add_argument("--threads", type=int, default=1)
    time_parser.add_argument("--search", choices=["auto", "faiss", "sklearn"], default="auto")
    args = parser.parse_args()
    radius(args) if args.command == "radius" else timing(args)


if __name__ == "__main__":
    main()
