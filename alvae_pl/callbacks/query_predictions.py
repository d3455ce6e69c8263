"""The model's predictions for the images of a query, for an oracle that shows them to the expert."""

from __future__ import annotations

import dataclasses

import lightning as L

from alvae_pl.callbacks.sharded_inference import pool_logits
from alvae_pl.models.metrics import scores as probabilities
from alvae_pl.models.task_model import TaskModel
from alvae_pl.oracles.oracle import Query


def with_predictions(trainer: L.Trainer, model: TaskModel, query: Query) -> Query:
    """``query`` with ``predictions``: float ``[b, K]`` probabilities of ``model`` for its ``b`` images (softmax over
    classes, or sigmoid per finding).

    Runs like the round's evaluation (eval mode, inference mode, sharded over DDP ranks and gathered, so every rank
    keeps the same query): it changes no weight, no batch-norm statistic and no random state, so a run whose oracle
    shows predictions selects and trains exactly as one whose oracle does not. Must be called on every rank.
    """
    logits = pool_logits(trainer, model, query.positions, "Predicting the query")
    return dataclasses.replace(query, predictions=probabilities(logits.cpu(), model.task))
