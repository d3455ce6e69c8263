"""The dense greedy loop of core-set and MedAL: each pick becomes a center, and one pass folds every candidate's
distance to it into the candidates' scores.

Core-set's k-center greedy (dense algorithm) and MedAL differ only in what a candidate's score is and how a new
center changes it (:class:`GreedyScore`); the loop that picks, reads the pick's score, measures every candidate
against the pick and sets the pick aside is :func:`greedy_picks`. The sharded variants
(``alvae_pl.acquisition.distributed_selection``) run the same scores over candidates spread across processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from alvae_pl.acquisition.distances import addmv_float32_, as_float32


@dataclass(frozen=True)
class GreedyScore:
    """What a greedy distance-based selection keeps per candidate, and how a new center changes it.

    Attributes:
        fold: ``fold(scores, squared)`` updates ``scores`` ``[n]`` in place with ``squared``, float32 ``[n]``: each
            candidate's squared distance to the new center as computed, ``||x||^2 + ||c||^2 - 2 x.c``, which rounding
            can take a little below 0 (the fold clamps it, fused with its own kernel where it can). It may overwrite
            ``squared``, a buffer the loop reuses.
        excluded: the score a pick is set to, so that it is never picked again: below every score an unpicked
            candidate can have, and kept there by every later fold.
    """

    fold: Callable[[Tensor, Tensor], object]
    excluded: float

    def add_center(
        self, scores: Tensor, x: Tensor, x_sq: Tensor, center: Tensor, center_sq: Tensor, squared: Tensor
    ) -> None:
        """Folds the squared distances of every row of ``x`` to ``center`` into ``scores``, in one pass over ``x``.

        Args:
            scores: ``[n]``, updated in place.
            x: float ``[n, D]`` in any precision (a low one is upcast a chunk at a time), with float32 squared norms
                ``x_sq`` ``[n]``.
            center: float32 ``[D]`` with squared norm ``center_sq`` (0-d); views of a row picked with a tensor
                index, so that nothing is read on the host.
            squared: float32 ``[n]`` buffer for the distances, reused from pick to pick (no ``[n]`` allocation).
        """
        # The matrix-vector product is the pass over x that dominates a pick; the norms are added into the buffer.
        self.fold(scores, addmv_float32_(torch.add(x_sq, center_sq, out=squared), x, center, alpha=-2))


def greedy_picks(
    scores: Tensor, x: Tensor, x_sq: Tensor, budget: int, rule: GreedyScore, first_pick: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``budget`` greedy picks: the candidate of the highest score (ties: the lowest position), which then becomes a
    center that every candidate's score is folded with (``rule``).

    Reads no value on the host, so on a GPU all ``budget`` picks are queued without waiting for any of them.
    Memory: one float32 ``[n]`` buffer for all picks, besides the results.

    Args:
        scores: ``[n]``, each candidate's score against the labeled set (float32 or float64); overwritten.
        x: the centred candidates, float ``[n, D]``, with float32 squared norms ``x_sq`` ``[n]``.
        budget: how many to pick, ``1 <= budget <= n``.
        rule: the scores' fold and the value a pick is set aside at.
        first_pick: with nothing labeled, the first pick (0-d int64 on ``x``'s device, drawn by the caller), scored
            ``inf``; ``None`` when the labeled set is not empty.

    Returns:
        ``(positions int64 [budget], each pick's score at pick time [budget], in ``scores``' dtype)`` on ``x``'s
        device.
    """
    positions = torch.empty(budget, dtype=torch.int64, device=x.device)
    scores_at_pick = scores.new_empty(budget)
    squared = torch.empty_like(x_sq)
    for i in range(budget):
        # One-element views, written in place: the pick stays an index tensor on the device, never a Python int,
        # whose reading would wait for the device.
        pick, score = positions[i : i + 1], scores_at_pick[i : i + 1]
        if i == 0 and first_pick is not None:
            pick.copy_(first_pick)
            score.fill_(float("inf"))
        else:
            torch.argmax(scores, dim=0, keepdim=True, out=pick)
            torch.index_select(scores, 0, pick, out=score)
        center, center_sq = as_float32(x.index_select(0, pick).squeeze(0)), x_sq.index_select(0, pick).squeeze(0)
        rule.add_center(scores, x, x_sq, center, center_sq, squared)
        scores.index_fill_(0, pick, rule.excluded)
    return positions, scores_at_pick
