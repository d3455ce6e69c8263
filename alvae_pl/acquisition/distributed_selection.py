"""Core-set and MedAL over candidates sharded across processes: no process ever holds every candidate's features.

Each process keeps its shard of the candidates (and of the labeled set) and its shard's running scores (nearest-center
distances for core-set, sums of distances for MedAL). A greedy step then costs two small collectives: an all-gather of
each process's best ``(score, global position)``, from which every process takes the same winner (the highest score,
ties to the lowest position, as one process's ``argmax`` does), and an all-reduce that hands every process the chosen
feature row (the owner contributes it, the others zeros). Every process then updates its own scores against that row.
Memory per process: its shard, one shard of the labeled set at a time, and ``[shard]`` vectors; communication per
pick: ``2 W + D + 1`` numbers for ``W`` processes and ``D`` features.

The picks equal those of :func:`~alvae_pl.acquisition.coreset.k_center_greedy` (dense algorithm) and
:func:`~alvae_pl.acquisition.medal.greedy_mean_distance` on all the candidates, up to float32 rounding: the shards are
centred on one common origin (the all-reduced mean), which rounds differently from one process's, so near-ties within
rounding can go either way (as between the two k-center algorithms); exact ties go to the lowest position.

Call on every process of the default ``torch.distributed`` group, with generators in the same state (a first pick
with nothing labeled is drawn on each from it). Collectives run on the candidates' device (CPU tensors for gloo, CUDA
for NCCL), and nothing is read back on the host until the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from alvae_pl.acquisition.coreset import _nearest_squared_distances
from alvae_pl.acquisition.distances import (
    DEFAULT_CHUNK_SIZE,
    addmv_float32_,
    as_float32,
    centre_points,
    check_points,
    column_sums,
    seeded_first_pick,
    squared_distance_blocks,
    squared_distances_to,
    squared_norms,
)
from alvae_pl.acquisition.heuristic import Selection


class _Shards:
    """This process's centred shard and what every process needs to know about the others'."""

    def __init__(self, candidates: Tensor, positions: Tensor, labeled: Tensor, budget: int, column_major: bool) -> None:
        if positions.ndim != 1 or len(positions) != len(candidates):
            raise ValueError(
                f"positions must be [{len(candidates)}], one per candidate row, got {list(positions.shape)}"
            )
        if len(positions) > 1 and not bool((positions[1:] > positions[:-1]).all()):
            raise ValueError("positions must be strictly increasing (each process's rows in candidate order)")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("distributed selection needs torch.distributed initialised (run it under DDP)")
        self.world, self.rank = dist.get_world_size(), dist.get_rank()
        self.device = candidates.device
        self.positions = positions.to(self.device, torch.int64)
        labeled = labeled.to(self.device).reshape(len(labeled), candidates.shape[1])
        counts = self._gather(torch.tensor([len(candidates), len(labeled)], dtype=torch.float64, device=self.device))
        self.shard_sizes = [int(count) for count in counts[:, 0].tolist()]
        self.labeled_sizes = [int(count) for count in counts[:, 1].tolist()]
        self.n, self.m = sum(self.shard_sizes), sum(self.labeled_sizes)
        check_points(candidates, labeled, budget, num_candidates=self.n)
        # Summed in process order on every process, so that all of them centre on the very same origin.
        sums = self._gather(column_sums(candidates) + column_sums(labeled))
        origin = sums.sum(0) / (self.n + self.m)
        self.x, self.y, self.x_sq, self.y_sq = centre_points(candidates, labeled, origin, column_major)

    def _gather(self, value: Tensor) -> Tensor:
        """``[W, *value.shape]``: every process's ``value``, in process order."""
        parts = [torch.empty_like(value) for _ in range(self.world)]
        dist.all_gather(parts, value.contiguous())
        return torch.stack(parts)

    def labeled_shards(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Every process's centred labeled shard and its squared norms, one at a time (each broadcast by its owner)."""
        for source, count in enumerate(self.labeled_sizes):
            if count == 0:
                continue
            if source == self.rank:
                # Sent as bytes: gloo has no bfloat16, and bytes arrive exactly as they left.
                dist.broadcast(self.y.contiguous().view(torch.uint8), source)
                yield self.y, self.y_sq
                continue
            shard = torch.empty(count, self.x.shape[1], dtype=self.x.dtype, device=self.device)
            dist.broadcast(shard.view(torch.uint8), source)
            yield shard, squared_norms(shard)

    def global_argmax(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """The highest of every process's ``scores`` ``[shard]`` and its global position (ties: the lowest), as 0-d
        (int64 position, float64 score) on every process."""
        if len(scores):
            local = torch.argmax(scores, dim=0, keepdim=True)  # the first maximum: the lowest position here
            pair = torch.cat([scores.index_select(0, local).double(), self.positions.index_select(0, local).double()])
        else:
            pair = torch.tensor([float("-inf"), float("inf")], dtype=torch.float64, device=self.device)
        table = self._gather(pair)  # [W, 2]
        best = table[:, 0].max()
        position = torch.where(table[:, 0] == best, table[:, 1], float("inf")).min()
        return position.long(), best

    def shared_row(self, position: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The centred feature row at global ``position`` (0-d int64), from whichever process holds it.

        Returns:
            ``(row float32 [D], squared norm 0-d, local index 0-d int64, whether this process holds it, 0-d bool)``.
        """
        dim = self.x.shape[1]
        if len(self.positions):
            local = torch.searchsorted(self.positions, position).clamp_max(len(self.positions) - 1)
            mine = self.positions[local] == position
            row = as_float32(self.x.index_select(0, local.reshape(1))).reshape(dim)
            packet = torch.where(mine, torch.cat([row, self.x_sq[local].reshape(1)]), 0.0)
        else:
            local, mine = position.new_zeros(()), torch.zeros((), dtype=torch.bool, device=self.device)
            packet = torch.zeros(dim + 1, device=self.device)
        # Only the owner's packet is non-zero, so the sum is its row, exactly.
        dist.all_reduce(packet)
        return packet[:dim], packet[dim], local, mine

    def first_pick(self, generator: torch.Generator | None) -> Tensor:
        """A first pick with nothing labeled: drawn from ``generator`` on every process, so the same everywhere."""
        return seeded_first_pick(self.n, self.device, generator)


def distributed_k_center_greedy(
    candidates: Tensor,
    positions: Tensor,
    labeled: Tensor,
    budget: int,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Selection:
    """Eq. 1 (core-set's k-center greedy, dense algorithm) over candidates sharded across processes.

    Args:
        candidates: this process's candidates, float ``[n_r, D]`` (float32, float16 or bfloat16; ``n_r`` may be 0).
        positions: their global positions, int64 ``[n_r]``, strictly increasing; over all processes, ``0 .. n - 1``
            once each.
        labeled: this process's share of the labeled points, float ``[m_r, D]`` (any split of the labeled set).
        budget: how many to pick in all, ``1 <= budget <= n``.
        generator: CPU generator, in the same state on every process, for the first pick of an empty labeled set.
        chunk_size: rows and columns per block of distances.

    Returns:
        on every process, the CPU ``Selection`` one process would return for all the candidates: global positions
        int64 ``[budget]`` in picking order; float32 distance of each pick to its nearest center at pick time.
    """
    shards = _Shards(candidates, positions, labeled, budget, column_major=True)
    x, x_sq = shards.x, shards.x_sq
    nearest = torch.full((len(x),), float("inf"), device=shards.device)
    for shard, shard_sq in shards.labeled_shards():
        torch.minimum(nearest, _nearest_squared_distances(x, x_sq, None, shard, shard_sq, chunk_size), out=nearest)
    picks = torch.empty(budget, dtype=torch.int64, device=shards.device)
    scores = torch.empty(budget, device=shards.device)  # float32, as one process's: the maxima are float32 values
    distances, zero = torch.empty_like(nearest), nearest.new_zeros(())
    for i in range(budget):
        if i == 0 and shards.m == 0:
            picks[i], scores[i] = shards.first_pick(generator), float("inf")
        else:
            picks[i], scores[i] = shards.global_argmax(nearest)
        center, center_sq, local, mine = shards.shared_row(picks[i])
        if len(x):
            addmv_float32_(torch.add(x_sq, center_sq, out=distances), x, center, alpha=-2)
            torch.clamp(distances, min=zero, max=nearest, out=nearest)
            # A pick sits at -1, below every real distance, as in one process: never chosen again.
            nearest[local] = torch.where(mine, -1.0, nearest[local])
    return Selection(picks.cpu(), scores.sqrt().cpu())


def distributed_greedy_mean_distance(
    candidates: Tensor,
    positions: Tensor,
    labeled: Tensor,
    budget: int,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Selection:
    """Eq. 2 (MedAL's greedy mean distance) over candidates sharded across processes; arguments and result as
    :func:`distributed_k_center_greedy` (scores: each pick's mean distance to the labeled set at pick time)."""
    shards = _Shards(candidates, positions, labeled, budget, column_major=True)
    x, x_sq = shards.x, shards.x_sq
    sums = torch.zeros(len(x), dtype=torch.float64, device=shards.device)
    for shard, shard_sq in shards.labeled_shards():
        for x_rows, _, block in squared_distance_blocks(x, x_sq, shard, shard_sq, chunk_size):
            sums[x_rows].add_(block.sqrt_().sum(dim=1, dtype=torch.float64))
    picks = torch.empty(budget, dtype=torch.int64, device=shards.device)
    sums_at_pick = torch.empty(budget, dtype=torch.float64, device=shards.device)
    distances = torch.empty_like(x_sq)
    for i in range(budget):
        if i == 0 and shards.m == 0:
            picks[i], sums_at_pick[i] = shards.first_pick(generator), float("inf")
        else:
            picks[i], sums_at_pick[i] = shards.global_argmax(sums)
        center, center_sq, local, mine = shards.shared_row(picks[i])
        if len(x):
            sums.add_(squared_distances_to(x, x_sq, center, center_sq, out=distances).sqrt_())
            sums[local] = torch.where(mine, float("-inf"), sums[local])
    # Pick i was made with m + i points labeled.
    mean = sums_at_pick / torch.arange(shards.m, shards.m + budget, device=shards.device)
    return Selection(picks.cpu(), mean.float().cpu())
