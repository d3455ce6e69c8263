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

from alvae_pl.acquisition.coreset import _nearest_squared_distances, nearest_center_score
from alvae_pl.acquisition.distances import (
    DEFAULT_CHUNK_SIZE,
    as_float32,
    centre_points,
    check_points,
    column_sums,
    seeded_first_pick,
    squared_norms,
)
from alvae_pl.acquisition.greedy_loop import GreedyScore
from alvae_pl.acquisition.heuristic import Selection
from alvae_pl.acquisition.medal import DISTANCE_SUM, add_distance_sums


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

    def greedy_picks(
        self, scores: Tensor, budget: int, rule: GreedyScore, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """:func:`~alvae_pl.acquisition.greedy_loop.greedy_picks` over the shards: each pick is the best of every
        process's (:meth:`global_argmax`), its row comes from its owner (:meth:`shared_row`), and each process folds
        its own candidates' distances to it into its ``scores``.

        Args:
            scores: this process's candidates' scores ``[shard]`` against the whole labeled set; overwritten.
            budget: how many to pick in all.
            rule: the scores' fold and the value a pick is set aside at.
            generator: CPU generator, in the same state on every process, for a first pick with nothing labeled
                (drawn on each, so the same everywhere).

        Returns:
            on every process, ``(global positions int64 [budget], each pick's score at pick time [budget], in
            ``scores``' dtype)`` on the candidates' device.
        """
        picks = torch.empty(budget, dtype=torch.int64, device=self.device)
        # In the scores' dtype, as one process's: the maxima are values of it.
        scores_at_pick = scores.new_empty(budget)
        squared = torch.empty_like(self.x_sq)
        for i in range(budget):
            if i == 0 and self.m == 0:
                picks[i], scores_at_pick[i] = seeded_first_pick(self.n, self.device, generator), float("inf")
            else:
                picks[i], scores_at_pick[i] = self.global_argmax(scores)
            center, center_sq, local, mine = self.shared_row(picks[i])
            if len(self.x):
                rule.add_center(scores, self.x, self.x_sq, center, center_sq, squared)
                # Set aside by its owner only, as in one process: never chosen again.
                scores[local] = torch.where(mine, rule.excluded, scores[local])
        return picks, scores_at_pick


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
    picks, scores = shards.greedy_picks(nearest, budget, nearest_center_score(shards.device), generator)
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
    sums = torch.zeros(len(shards.x), dtype=torch.float64, device=shards.device)
    for shard, shard_sq in shards.labeled_shards():
        add_distance_sums(sums, shards.x, shards.x_sq, shard, shard_sq, chunk_size)
    picks, sums_at_pick = shards.greedy_picks(sums, budget, DISTANCE_SUM, generator)
    # Pick i was made with m + i points labeled.
    mean = sums_at_pick / torch.arange(shards.m, shards.m + budget, device=shards.device)
    return Selection(picks.cpu(), mean.float().cpu())
