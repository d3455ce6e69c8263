"""Batched inference over rows of an in-memory tensor, sharded over DDP ranks and gathered on every rank."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor
from tqdm.auto import tqdm


def sharded_inference(
    trainer: L.Trainer,
    module: L.LightningModule,
    num_rows: int,
    compute: Callable[[Tensor], dict[str, Tensor]],
    batch_size: int,
    description: str,
    dtype: torch.dtype = torch.float32,
    gather: bool = True,
) -> dict[str, Tensor]:
    """Run ``compute(rows)`` over ``rows = 0..num_rows-1``, each rank on its share, and gather the results.

    Rank ``r`` of ``W`` takes rows ``r, r+W, r+2W, ...`` of the row list padded (by wrapping around) to a
    multiple of ``W``, so that every rank holds the same number of rows: ``all_gather`` needs equal shapes or
    it hangs. Interleaving the gathered shards and dropping the padding restores row order exactly.

    Must be called on every rank (it is a collective). ``compute`` gets int64 row indices ``[b]`` and returns
    name -> tensor ``[b, ...]`` on the module's device; it runs under ``torch.inference_mode`` with the module in
    eval mode and in the trainer's precision (``bf16-mixed`` autocasts it, as it does training steps).

    With ``gather`` false, each rank keeps its own share, without the padding: rows ``rank, rank + W, ...`` below
    ``num_rows`` (a selection that runs on every rank's shard, ``alvae_pl.acquisition.distributed_selection``).

    Returns:
        name -> tensor ``[num_rows, ...]`` (``gather`` false: this rank's rows) on the module's device, identical on
        every rank; floating-point
        outputs in ``dtype`` whatever the trainer's precision (float32 by default, so that selections and metrics
        never see bfloat16 unless asked to: a heuristic's ``feature_dtype`` halves what is gathered and kept).
    """
    world, rank = trainer.world_size, trainer.global_rank
    per_rank = -(-num_rows // world)
    mine = (torch.arange(per_rank * world) % num_rows)[rank::world]
    was_training = module.training
    module.eval()
    parts: dict[str, list[Tensor]] = {}
    show = trainer.is_global_zero and trainer.progress_bar_callback is not None
    try:
        with (
            torch.inference_mode(),
            trainer.precision_plugin.forward_context(),
            tqdm(total=len(mine), desc=description, disable=not show, leave=False) as bar,
        ):
            for rows in mine.split(batch_size):
                for name, value in compute(rows).items():
                    parts.setdefault(name, []).append(value.to(dtype) if value.is_floating_point() else value)
                bar.update(len(rows))
    finally:
        module.train(was_training)
    outputs = {}
    for name, chunks in parts.items():
        local = torch.cat(chunks)
        if not gather:
            outputs[name] = local[: len(range(rank, num_rows, world))]
            continue
        if world == 1:
            outputs[name] = local[:num_rows]
            continue
        gathered = module.all_gather(local)  # [W, per_rank, ...]
        outputs[name] = gathered.transpose(0, 1).reshape(per_rank * world, *local.shape[1:])[:num_rows]
    return outputs


def pool_logits(trainer: L.Trainer, model: L.LightningModule, positions: Tensor, description: str) -> Tensor:
    """The task model's logits ``[n, K]`` for pool positions ``[n]``, sharded over the ranks and gathered (every rank
    gets them all), in batches of the datamodule's ``eval_batch_size``. Must be called on every rank."""
    datamodule = trainer.datamodule
    return sharded_inference(
        trainer,
        model,
        len(positions),
        lambda rows: {"logits": model(datamodule.pool_images(positions[rows]).to(model.device))},
        datamodule.eval_batch_size,
        description,
    )["logits"]
