"""``predictions.csv``: what a run's current model thinks of every pool image (and, on request, of the validation and
test images), beside what is known of each: its label, who gave it, and the latest acquisition's score.

``python train.py predict --config <the run's config> [--splits [pool,val,test]]`` writes it into the run folder
(:meth:`alvae_pl.cli.AlvaeCLI.predict`). The model is the one the run last trained: a finished run's final model
(``last.ckpt``), or, for a run waiting for an expert's labels, the model that chose the open query
(:mod:`alvae_pl.round_model`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from alvae_pl.atomic_files import write_csv
from alvae_pl.callbacks.run_checkpoint import RunCheckpoint
from alvae_pl.data.image_data import UNKNOWN_TARGET, TaskKind
from alvae_pl.data.label_pool import origin_text
from alvae_pl.round_model import load_round_model, round_model_path
from alvae_pl.run_folder import PREDICTIONS_FILENAME, loop_state

if TYPE_CHECKING:
    import lightning as L

    from alvae_pl.data.datamodule import ActiveDataModule
    from alvae_pl.models.task_model import TaskModel

Split = Literal["pool", "val", "test"]
#: A multi-label image with no finding predicted (or labeled) present.
NO_FINDING = "none"


@dataclass(frozen=True)
class RunModel:
    """The weights ``predict`` uses and where they come from.

    Attributes:
        state_dict: the task model's weights.
        round_index: the round that trained them.
        labels: how many labels that round trained on.
        source: the file they were read from.
    """

    state_dict: dict[str, Tensor]
    round_index: int
    labels: int
    source: Path


def run_model(run_folder: Path, checkpoint: dict[str, Any], checkpoint_path: Path) -> RunModel:
    """The run's current model: a finished run's final weights, else those of the round that waits for labels.

    Raises:
        FileNotFoundError: the run has trained no round yet (or is training one and has not paused since).
    """
    loop = loop_state(checkpoint)
    history = loop.get("history") or []
    if loop.get("finished") and history:
        return RunModel(checkpoint["state_dict"], len(history) - 1, int(history[-1]["labels"]), checkpoint_path)
    saved = load_round_model(run_folder)
    if saved is None:
        raise FileNotFoundError(
            f"{run_folder} holds no trained model yet (a run's model is kept once it finishes, or when a round waits "
            "for labels): continue the run with python train.py fit ... --ckpt_path last, then predict"
        )
    return RunModel(saved["state_dict"], int(saved["round"]), int(saved["labels"]), round_model_path(run_folder))


def latest_scores(loop_state: dict[str, Any], datamodule: ActiveDataModule) -> dict[int, float]:
    """Pool position -> score of the latest acquisition's picks: the open query's when the run waits for labels,
    else the last round's acquired images (none when only initial labels exist)."""
    pending = loop_state.get("pending")
    if pending is not None:
        return dict(zip(pending["positions"].tolist(), pending["scores"].tolist(), strict=True))
    pool = datamodule.pool
    scores = loop_state.get("scores", torch.empty(0))
    acquired = pool.labeled[len(pool.labeled) - len(scores) :]
    rounds = pool.labeled_rounds[len(pool.labeled) - len(scores) :]
    if not len(acquired):
        return {}
    last = rounds == rounds.max()
    return dict(zip(acquired[last].tolist(), scores[last].tolist(), strict=True))


def probabilities(logits: Tensor, task: TaskKind) -> Tensor:
    """float ``[n, K]``: softmax over classes (multi-class), or each finding's sigmoid (multi-label)."""
    return logits.float().softmax(dim=1) if task == "multiclass" else logits.float().sigmoid()


def target_text(target: int | Sequence[int], task: TaskKind, class_names: Sequence[str]) -> str:
    """A target (a class index, or K 0/1 findings) as a person reads it: the class name, or the present findings
    joined by ``;`` (``none`` if no finding is present); empty for ``UNKNOWN_TARGET``."""
    if task == "multiclass":
        return "" if target == UNKNOWN_TARGET else class_names[target]
    if UNKNOWN_TARGET in target:
        return ""
    present = [name for name, value in zip(class_names, target, strict=True) if value == 1]
    return ";".join(present) if present else NO_FINDING


@torch.inference_mode()
def predict_images(
    model: TaskModel,
    images: Callable[[Tensor], Tensor],
    count: int,
    batch_size: int,
    device: torch.device,
    precision: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> Tensor:
    """float ``[count, K]`` probabilities of images ``0..count-1``, the model in eval mode.

    Args:
        model: the task model.
        images: rows int64 ``[b]`` -> their uint8 images ``[b, C, H, W]``; called one batch at a time, so that an
            image store on disk is read a batch at a time too.
        count: how many images.
        batch_size: images per forward pass.
        device: where the model runs.
        precision: the Trainer's precision context (``forward_context``), entered around each forward, as the loop's
            evaluation does.
    """
    model.eval()
    parts = []
    for rows in torch.arange(count).split(batch_size):
        with precision():
            logits = model(images(rows).to(device))
        parts.append(probabilities(logits, model.task).cpu())
    return torch.cat(parts) if parts else torch.empty(0, model.num_classes)


def prediction_table(
    datamodule: ActiveDataModule,
    outputs: dict[Split, Tensor],
    scores: dict[int, float],
) -> tuple[list[str], list[dict[str, Any]]]:
    """``predictions.csv``'s columns and rows.

    Columns: ``split`` (``pool``, ``val``, ``test``), ``index`` (the pool position, or the row of the validation or
    test split), ``file`` (for images read from files), ``predicted`` (the most probable class; for multi-label data
    the findings with probability at least 0.5), ``p_<class>`` (each class's or finding's probability), ``label``
    (the label the run knows: given or answered for pool images, the split's label for validation and test; empty
    for an unlabeled pool image), ``origin`` (how a pool image's label came, as in ``labeled.csv``; ``val`` or
    ``test`` labels for those splits), ``round`` (the round a pool image was labeled in) and ``score`` (the latest
    acquisition's score of the images it picked, see :func:`latest_scores`; empty for the others).

    Args:
        datamodule: the run's data and restored pool.
        outputs: probabilities ``[n, K]`` per split, for the splits to write, in split order.
        scores: pool position -> the latest acquisition's score.
    """
    data = datamodule.data
    names = data.class_names
    pool = datamodule.pool
    labeled_at = {p: i for i, p in enumerate(pool.labeled.tolist())}
    rounds, origins = pool.labeled_rounds.tolist(), pool.labeled_origins.tolist()
    origin_rounds = pool.origin_rounds.tolist()  # the round a correction was made in, for a corrected label
    files = {"pool": datamodule.pool_files, "val": data.val_files, "test": data.test_files}
    with_files = any(files[split] is not None for split in outputs)
    columns = ["split", "index", *(["file"] if with_files else []), "predicted", *[f"p_{n}" for n in names]]
    columns += ["label", "origin", "round", "score"]
    rows = []
    for split, probs in outputs.items():
        targets = datamodule.pool_targets(torch.arange(len(pool))) if split == "pool" else getattr(data, split).targets
        predicted = probs.argmax(dim=1) if data.task == "multiclass" else (probs >= 0.5).long()
        for index, (p, guess, target) in enumerate(
            zip(probs.tolist(), predicted.tolist(), targets.tolist(), strict=True)
        ):
            row: dict[str, Any] = {"split": split, "index": index}
            if with_files:
                row["file"] = files[split][index] if files[split] is not None else ""
            row["predicted"] = target_text(guess, data.task, names)
            row |= {f"p_{n}": v for n, v in zip(names, p, strict=True)}
            if split != "pool":
                row |= {"label": target_text(target, data.task, names), "origin": f"{split} labels"}
            elif index in labeled_at:
                at = labeled_at[index]
                origin = origin_text(origins[at], origin_rounds[at])
                row |= {"label": target_text(target, data.task, names), "origin": origin}
                row["round"] = rounds[at]
            row["score"] = scores.get(index, math.nan) if split == "pool" else math.nan
            rows.append(row)
    return columns, rows


def write_predictions(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> Path:
    """``predictions.csv`` written whole (:mod:`alvae_pl.atomic_files`); probabilities and scores to 6 digits."""
    return write_csv(path, columns, ([row.get(c) for c in columns] for row in rows), float_format=lambda v: f"{v:.6g}")


def predict_run(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: ActiveDataModule,
    run_folder: Path,
    checkpoint_path: Path,
    splits: Sequence[Split],
    cold_start: bool = False,
) -> tuple[Path, str]:
    """Writes ``<run folder>/predictions.csv`` for the run's current model (:func:`run_model`).

    Args:
        trainer: the run's Trainer (its device and precision).
        model: the run's task model, as configured; its weights are replaced by the run's.
        datamodule: the run's data; its pool is restored from the checkpoint.
        run_folder: the run folder.
        checkpoint_path: the run's ``last.ckpt`` (or the checkpoint to read the pool and the loop from).
        splits: which splits to write, in this order.
        cold_start: the run chose its first labels (``active.start``): its pool starts empty.

    Returns:
        The file written and a one-line summary of what it holds.

    Raises:
        FileNotFoundError: no checkpoint, or no trained model yet.
        ValueError: not an active-learning run, or settings that do not fit the checkpoint.
    """
    from alvae_pl.models.task_model import TaskModel  # the models package imports heavier things: load it late

    if not isinstance(model, TaskModel) or datamodule.train_on != "labeled":
        raise ValueError("predict writes an active-learning run's predictions: give the config of a TaskModel run")
    if not checkpoint_path.is_file():
        raise FileNotFoundError(
            f"{checkpoint_path} not found: the run has not trained yet; start it (python train.py fit with the same "
            "config), then predict"
        )
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    if cold_start:
        datamodule.defer_initial_labels()
    datamodule.load_state_dict(checkpoint[type(datamodule).__qualname__])
    chosen = run_model(run_folder, checkpoint, checkpoint_path)
    model.load_state_dict(chosen.state_dict)
    device = trainer.strategy.root_device
    model.to(device)
    data = datamodule.data
    outputs: dict[Split, Tensor] = {}
    for split in splits:
        images = datamodule.pool_images if split == "pool" else partial(datamodule.split_images, split)
        count = len(datamodule.pool) if split == "pool" else len(getattr(data, split))
        forward = trainer.precision_plugin.forward_context
        outputs[split] = predict_images(model, images, count, datamodule.eval_batch_size, device, forward)
    columns, rows = prediction_table(datamodule, outputs, latest_scores(loop_state(checkpoint), datamodule))
    path = write_predictions(run_folder / PREDICTIONS_FILENAME, columns, rows)
    counts = ", ".join(f"{len(probs)} {split}" for split, probs in outputs.items())
    summary = (
        f"Wrote {path} ({counts} images): the model of round {chosen.round_index}, trained on {chosen.labels} labels "
        f"({chosen.source.name})"
    )
    return path, summary


def checkpoint_for(run_folder: Path, ckpt_path: str | None, dirpath: str | None) -> Path:
    """The checkpoint ``predict`` reads: the run's ``last.ckpt`` for ``None`` or ``last``, else ``ckpt_path``."""
    return RunCheckpoint.last_path(run_folder, dirpath) if ckpt_path in (None, "last") else Path(ckpt_path)
