"""One acquisition of the loop: a heuristic's picks among the unlabeled pool, and the oracle's answers for them.

Every rank takes part, so that every rank labels the same images: the pool is embedded in shards (each rank its
share, gathered on every rank), the heuristic selects on rank zero and the picks are broadcast; a sharded selection
(core-set, MedAL with ``sharded: true``) instead selects on every rank's own rows, gathering nothing. The oracle runs
on rank zero (it may read and write files), and its answers, its message or its error are broadcast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from alvae_pl.acquisition.heuristic import Heuristic
from alvae_pl.callbacks.sharded_inference import sharded_inference
from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.models.task_model import TaskModel
from alvae_pl.oracles.oracle import Oracle, Query


def acquire(
    trainer: L.Trainer,
    model: TaskModel,
    heuristic: Heuristic,
    budget: int,
    generator: torch.Generator,
    round_index: int,
) -> Query:
    """``heuristic``'s ``budget`` picks among the unlabeled pool, for the round ``round_index`` that trains on them.

    Returns:
        The query, the same on every rank: pool positions int64 ``[budget]`` in picking order and their scores
        float32 ``[budget]``.
    """
    datamodule: ActiveDataModule = trainer.datamodule
    pool = datamodule.pool
    heuristic.start_acquisition(generator)
    candidates = heuristic.candidates(pool.unlabeled, generator, pool)
    if len(candidates) < budget:
        raise ValueError(
            f"{type(heuristic).__name__} offered {len(candidates)} candidates for {budget} picks: let it offer more "
            "(NearestCandidates: min_candidates; LearningLoss: subset_size) or lower active.budget"
        )
    # A sharded selection (core-set, MedAL with ``sharded: true``) runs on every rank's shard: nothing gathered.
    shard = trainer.world_size > 1 and getattr(heuristic, "sharded", False)
    candidate_outputs = embed_pool(trainer, model, heuristic, candidates, "Embedding unlabeled pool", shard)
    labeled_outputs = (
        embed_pool(trainer, model, heuristic, pool.labeled, "Embedding labeled set", shard)
        if heuristic.uses_labeled
        else {"index": pool.labeled}
    )
    # What is known of them (ClassBalanced); of this rank's rows when sharded.
    labeled_outputs["target"] = datamodule.pool_targets(labeled_outputs["index"])
    selection = None
    if shard:
        selection = heuristic.select_sharded(candidate_outputs, labeled_outputs, budget, generator)
        positions, scores = selection.positions.cpu(), selection.scores.float().cpu()
    else:
        if trainer.is_global_zero:
            selection = heuristic.select(candidate_outputs, labeled_outputs, budget, generator)
            selection = (selection.positions.cpu(), selection.scores.detach().float().cpu())
        positions, scores = trainer.strategy.broadcast(selection, src=0)
    if len(positions) != budget or len(positions.unique()) != budget:
        raise RuntimeError(f"{type(heuristic).__name__} returned {len(positions)} picks, expected {budget}")
    return Query(round_index=round_index, positions=candidates[positions], scores=scores)


def embed_pool(
    trainer: L.Trainer,
    model: TaskModel,
    heuristic: Heuristic,
    positions: Tensor,
    description: str,
    shard: bool = False,
) -> dict[str, Tensor]:
    """``heuristic.embed`` of the pool images at ``positions`` (int64 ``[n]``), gathered on every rank.

    Returns:
        The heuristic's outputs (each ``[n, ...]``, in ``heuristic.feature_dtype`` where floating) and ``"index"``:
        the pool positions. With ``shard``, each rank keeps its own rows only: ``"row"``, their places in
        ``positions`` (every ``world_size``-th from the rank's own), and ``"index"``, their pool positions.
    """
    outputs: dict[str, Tensor] = {}
    if heuristic.uses_model and len(positions):
        datamodule: ActiveDataModule = trainer.datamodule
        outputs = sharded_inference(
            trainer,
            model,
            len(positions),
            lambda rows: heuristic.embed(model, datamodule.pool_images(positions[rows]).to(model.device)),
            datamodule.eval_batch_size,
            description,
            dtype=heuristic.feature_dtype,
            gather=not shard,
        )
    if shard:
        outputs["row"] = torch.arange(trainer.global_rank, len(positions), trainer.world_size)
        positions = positions[outputs["row"]]
    outputs["index"] = positions
    return outputs


def settle(trainer: L.Trainer, oracle: Oracle, query: Query, run_folder: Path, pause_on_error: bool) -> Tensor | str:
    """Asks ``oracle`` for ``query``'s labels and labels in the pool what it answers, on every rank alike.

    Returns:
        The scores float32 ``[a]`` of the ``a`` answered picks, in the order the oracle answered them; or, when it
        cannot answer yet, its message (what the expert must do). An error in the answers (a bad file) is raised on
        every rank, or with ``pause_on_error`` returned as the message, which pauses the run like missing answers.
    """
    outcome: tuple[str, Any] | None = None
    if trainer.is_global_zero:
        try:
            answered = oracle.answer(query, trainer.datamodule, run_folder)
            outcome = ("wait", answered) if isinstance(answered, str) else ("answers", answered)
        except (OSError, ValueError) as error:
            outcome = ("error", error)
    kind, value = trainer.strategy.broadcast(outcome, src=0)
    if kind == "error" and not pause_on_error:
        raise value
    if kind != "answers":
        return str(value)
    asked = query.positions.tolist()
    keep = torch.tensor([asked.index(p) for p in value.positions.tolist()], dtype=torch.int64)
    trainer.datamodule.reveal(value.positions, value.targets)
    trainer.datamodule.pool.label(value.positions, round_index=query.round_index)
    return query.scores[keep]
