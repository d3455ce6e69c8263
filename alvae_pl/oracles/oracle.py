"""The interface between the active-learning loop and whoever knows the labels, and the simulated oracle."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:
    from alvae_pl.data.datamodule import ActiveDataModule


@dataclass(frozen=True)
class Query:
    """The images one acquisition picked, waiting for labels.

    Attributes:
        round_index: the round that will train on the answers (1 for the first acquisition).
        positions: int64 ``[b]`` pool positions, in picking order.
        scores: float ``[b]`` the heuristic's score of each pick.
        predictions: float ``[b, K]`` probabilities the model that made the picks gives each (softmax over classes,
            or sigmoid per finding), for an oracle that shows them (``Oracle.shows_predictions``); else ``None``.
    """

    round_index: int
    positions: Tensor
    scores: Tensor
    predictions: Tensor | None = None


@dataclass(frozen=True)
class Answers:
    """Labels for some or all of a query's images.

    Attributes:
        positions: int64 ``[a]`` pool positions, a subset of the query's, in the query's order.
        targets: int64 ``[a]`` class indices or ``[a, K]`` 0/1 findings.
    """

    positions: Tensor
    targets: Tensor


class Oracle(ABC):
    """Labels the images an acquisition picked (Algorithm 1, step 7: "label the selected images").

    The loop calls ``answer`` on rank zero after each acquisition, and again when a paused run is continued.
    An oracle either answers (the loop labels the answered images and trains the next round) or returns a
    one-line message saying what has to happen first (the loop then checkpoints and stops the run; the same
    command continues it).
    """

    #: Whether the loop should attach the model's predictions to each query (``Query.predictions``): an oracle that
    #: shows them to the expert as a pre-annotation. The initial labels of a cold start have none (no model yet).
    shows_predictions: bool = False
    #: Whether an expert may correct earlier answers through the run folder's ``corrections.csv``
    #: (:mod:`alvae_pl.oracles.corrections`); a simulation's labels are the data set's.
    takes_corrections: bool = False

    def check(self, datamodule: ActiveDataModule) -> None:  # noqa: B027 - optional hook
        """Called before training: raise a one-line ``ValueError`` if this oracle cannot label this data."""

    @abstractmethod
    def answer(self, query: Query, datamodule: ActiveDataModule, run_folder: Path) -> Answers | str:
        """The labels of ``query``'s images, or a one-line message saying what to do before the run can go on."""


class SimulatedOracle(Oracle):
    """Reveals the labels the data set already holds: the paper's simulated expert, answering at once."""

    def check(self, datamodule: ActiveDataModule) -> None:
        pool = datamodule.pool
        unknown = int((~datamodule.data.train_known[pool.dataset_indices]).sum())
        if unknown:
            raise ValueError(
                f"{unknown} pool images have no label, which a simulation cannot reveal: set active.oracle: "
                "alvae_pl.oracles.HumanOracle to ask an expert for them"
            )

    def answer(self, query: Query, datamodule: ActiveDataModule, run_folder: Path) -> Answers:
        return Answers(positions=query.positions, targets=datamodule.pool_targets(query.positions))
