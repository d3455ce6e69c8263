"""Core-set and MedAL over candidates sharded across two gloo processes pick what one process picks."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alvae_pl.acquisition.coreset import k_center_greedy
from alvae_pl.acquisition.distributed_selection import distributed_greedy_mean_distance, distributed_k_center_greedy
from alvae_pl.acquisition.medal import greedy_mean_distance
from tests.test_coreset_medal import clustered_points, random_points
from tests.test_feature_dtype import symmetric_grid

pytestmark = [pytest.mark.ddp, pytest.mark.timeout(300)]

WORLD = 2
METHODS = {
    "coreset": (partial(k_center_greedy, algorithm="dense"), distributed_k_center_greedy),
    "medal": (greedy_mean_distance, distributed_greedy_mean_distance),
}
#: (name, data, n, m, dim, budget, how the candidates are split, feature dtype, chunk size)
CASES = [
    ("interleaved", "random", 300, 40, 16, 60, "interleaved", torch.float32, 64),
    ("cold start", "clustered", 300, 0, 16, 50, "interleaved", torch.float32, 1024),
    ("uneven halves", "clustered", 500, 70, 32, 80, "uneven", torch.float32, 128),
    ("all on rank 0", "random", 200, 30, 8, 40, "one rank", torch.float32, 64),
    # Exact arithmetic: equal distances stay equal, and ties across processes go to the lowest position.
    ("exact ties", "grid", 300, 20, 6, 80, "interleaved", torch.float32, 64),
    ("exact ties, bfloat16", "grid", 300, 20, 6, 80, "uneven", torch.bfloat16, 64),
]


def make_case(data: str, n: int, m: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    if data == "grid":
        return symmetric_grid(n, m, dim, seed=0)
    return (random_points if data == "random" else clustered_points)(n, m, dim, seed=n + m)


def rows_of(rank: int, n: int, split: str) -> torch.Tensor:
    """The candidate positions process ``rank`` holds."""
    if split == "interleaved":  # as the loop's sharded inference deals them out
        return torch.arange(rank, n, WORLD)
    if split == "uneven":
        cut = n // 3
        return torch.arange(0, cut) if rank == 0 else torch.arange(cut, n)
    return torch.arange(n) if rank == 0 else torch.arange(0)


def worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, data, n, m, dim, budget, split, dtype, chunk_size in CASES:
            candidates, labeled = make_case(data, n, m, dim)
            mine = rows_of(rank, n, split)
            labeled_share = labeled[rank::WORLD]  # the labeled set split another way than the candidates
            for method, (_, distributed) in METHODS.items():
                selection = distributed(
                    candidates[mine].to(dtype),
                    mine,
                    labeled_share.to(dtype),
                    budget,
                    torch.Generator().manual_seed(7),
                    chunk_size,
                )
                results[name, method] = (selection.positions, selection.scores)
        torch.save(results, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = tmp_path_factory.mktemp("distributed")
    mp.spawn(worker, args=(str(folder),), nprocs=WORLD, join=True)
    return [torch.load(Path(folder) / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_sharded_selection_picks_what_one_process_picks(distributed_results, case, method):
    name, data, n, m, dim, budget, _, dtype, chunk_size = case
    candidates, labeled = make_case(data, n, m, dim)
    one = METHODS[method][0](
        candidates.to(dtype), labeled.to(dtype), budget, torch.Generator().manual_seed(7), chunk_size
    )
    for results in distributed_results:  # every process returns the whole selection
        positions, scores = results[name, method]
        assert positions.tolist() == one.positions.tolist()
        torch.testing.assert_close(scores, one.scores, rtol=1e-5, atol=1e-5)
    if data == "grid":
        assert torch.equal(distributed_results[0][name, method][1], one.scores)  # exact arithmetic: bit for bit


def test_sharded_selection_refuses_unordered_positions_before_any_collective():
    with pytest.raises(ValueError, match="strictly increasing"):
        distributed_k_center_greedy(torch.zeros(3, 2), torch.tensor([2, 0, 1]), torch.zeros(0, 2), 1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sharded_core_set_through_the_loop_under_ddp_picks_what_one_process_picks(tmp_path: Path) -> None:
    """``sharded: true`` under DDP (two gloo ranks through ``train.py``): each rank embeds and keeps its shard of the
    pool, nothing is gathered, and the labeled rows, scores and metrics equal a one-process run's."""
    from tests.test_ddp import FROZEN, assert_ddp_equals_one_process

    assert_ddp_equals_one_process(
        tmp_path, "digits_coreset.yaml", [*FROZEN, "--active.heuristic.init_args.sharded=true"]
    )
