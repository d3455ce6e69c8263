"""Which pool images are labeled, in the order they were labeled."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import torch
from torch import Tensor


class LabelOrigin(IntEnum):
    """How a pool image got its label (kept per labeled image in :class:`LabelPool`'s state).

    The codes are what a checkpoint stores: append new ones, never renumber.
    """

    #: One of ``data.initial_labels`` drawn at random by ``data.pool_seed`` (the paper's start).
    RANDOM_DRAW = 0
    #: Named in the labels file a lab's run started from (``FolderSource``'s ``labels``).
    LABELS_FILE = 1
    #: An oracle's answer to the query of the image's round (an expert's, or the simulation revealing a known label;
    #: round 0 for a cold start's first picks).
    ANSWER = 2
    #: An expert's correction of an earlier label (the run folder's ``corrections.csv``), read before the round it
    #: first trains in; the image keeps the round it was labeled in.
    CORRECTION = 3


def origin_text(origin: int, round_index: int) -> str:
    """The origin as ``labeled.csv`` writes it: ``labels file``, ``random draw``, ``answer to round <r>`` or
    ``correction in round <r>`` (``round_index``: :attr:`LabelPool.origin_rounds`)."""
    if origin == LabelOrigin.ANSWER:
        return f"answer to round {round_index}"
    if origin == LabelOrigin.CORRECTION:
        return f"correction in round {round_index}"
    return LabelOrigin(origin).name.lower().replace("_", " ")


class LabelPool:
    """A seeded random subset of the train split, split into labeled and unlabeled images.

    Pool positions ``0..P-1`` are the currency of acquisition; ``dataset_indices[p]`` is the train-split
    index of pool position ``p``. Validation and test images are never in the pool, so they can never be
    labeled. The labeled set only grows, never holds duplicates, and remembers the round each image was
    labeled in and how its label came (:class:`LabelOrigin`, part of the state: a resumed run restores it).

    Args:
        train_size: number of images in the train split.
        pool_size: how many of them form the pool (``None``: all).
        initial_labels: how many pool images are labeled before round one.
        pool_seed: seeds both the pool subset and the initial labels, independent of the training seed, so
            every heuristic compared under the same ``pool_seed`` starts from the same labels.
        initial_positions: pool positions already labeled by a person (a lab's labels file) instead of
            ``initial_labels`` drawn at random; the pool is then the whole train split.
        defer_initial: start with no labeled image; a strategy chooses the initial labels later (a cold start:
            ``ActiveLearningLoop.start``). The pool subset is the one ``pool_seed`` draws either way, so a cold start
            and a random start of the same seed choose from the same images.
    """

    def __init__(
        self,
        train_size: int,
        pool_size: int | None,
        initial_labels: int,
        pool_seed: int,
        initial_positions: Tensor | None = None,
        defer_initial: bool = False,
    ) -> None:
        self.deferred_initial = defer_initial
        self._initial_from_file = initial_positions is not None
        if initial_positions is not None:
            if pool_size not in (None, train_size):
                raise ValueError(
                    f"pool_size={pool_size}, but a pool whose labels a person gives is the whole folder of "
                    f"{train_size} images: set data.pool_size: null"
                )
            if len(initial_positions) == 0 and not defer_initial:
                raise ValueError(
                    "no pool image has a label yet: label a few in the labels CSV, or have the run choose the first "
                    "ones (active.start, e.g. configs/heuristics/start_typiclust.yaml), then start the run"
                )
            self.dataset_indices = torch.arange(train_size)
            self._is_labeled = torch.zeros(train_size, dtype=torch.bool)
            self._order = torch.empty(0, dtype=torch.int64)
            self._rounds = torch.empty(0, dtype=torch.int64)
            self._origins = torch.empty(0, dtype=torch.int64)
            self._corrected_in = torch.empty(0, dtype=torch.int64)
            positions = torch.as_tensor(initial_positions, dtype=torch.int64).sort().values
            self.label(positions, round_index=0, origin=LabelOrigin.LABELS_FILE)
            return
        pool_size = train_size if pool_size is None else pool_size
        if not 0 < pool_size <= train_size:
            raise ValueError(
                f"pool_size={pool_size} but the train split has {train_size} images: "
                f"set data.pool_size between 1 and {train_size}"
            )
        if not defer_initial and not 0 < initial_labels <= pool_size:
            raise ValueError(
                f"initial_labels={initial_labels} but the pool has {pool_size} images: "
                f"set data.initial_labels between 1 and {pool_size}"
            )
        generator = torch.Generator().manual_seed(pool_seed)
        self.dataset_indices: Tensor = torch.randperm(train_size, generator=generator)[:pool_size].sort().values
        self._is_labeled = torch.zeros(pool_size, dtype=torch.bool)
        self._order = torch.empty(0, dtype=torch.int64)
        self._rounds = torch.empty(0, dtype=torch.int64)
        self._origins = torch.empty(0, dtype=torch.int64)
        self._corrected_in = torch.empty(0, dtype=torch.int64)
        if not defer_initial:
            drawn = torch.randperm(pool_size, generator=generator)[:initial_labels].sort().values
            self.label(drawn, round_index=0, origin=LabelOrigin.RANDOM_DRAW)

    def __len__(self) -> int:
        return len(self.dataset_indices)

    @property
    def labeled(self) -> Tensor:
        """Pool positions of labeled images, int64 ``[L]``, in labeling order."""
        return self._order

    @property
    def labeled_rounds(self) -> Tensor:
        """Round in which each of ``labeled`` was labeled (0: initial labels), int64 ``[L]``."""
        return self._rounds

    @property
    def labeled_origins(self) -> Tensor:
        """How each of ``labeled`` got its label, int64 ``[L]`` :class:`LabelOrigin` codes."""
        return self._origins

    @property
    def origin_rounds(self) -> Tensor:
        """The round each of ``labeled``'s origins names, int64 ``[L]``: the round its label was last corrected in
        (:meth:`correct`), else the round it was labeled in."""
        return torch.where(self._corrected_in >= 0, self._corrected_in, self._rounds)

    @property
    def unlabeled(self) -> Tensor:
        """Pool positions of unlabeled images, int64 ``[U]``, ascending."""
        return (~self._is_labeled).nonzero().squeeze(1)

    @property
    def num_labeled(self) -> int:
        return len(self._order)

    @property
    def num_unlabeled(self) -> int:
        return len(self) - self.num_labeled

    def label(self, positions: Tensor, round_index: int, origin: LabelOrigin = LabelOrigin.ANSWER) -> None:
        """Mark pool positions as labeled.

        Args:
            positions: int64 ``[b]`` pool positions, all currently unlabeled and distinct.
            round_index: the round whose acquisition chose them.
            origin: how their labels came (an oracle's answer unless said otherwise).
        """
        positions = torch.as_tensor(positions, dtype=torch.int64).flatten().cpu()
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            raise ValueError(f"pool positions must lie in [0, {len(self)}), got {positions.min()}..{positions.max()}")
        if len(positions.unique()) != len(positions):
            raise ValueError("cannot label the same pool position twice in one call")
        already = positions[self._is_labeled[positions]]
        if len(already):
            raise ValueError(f"pool positions {already[:5].tolist()} are already labeled")
        self._is_labeled[positions] = True
        self._order = torch.cat([self._order, positions])
        self._rounds = torch.cat([self._rounds, torch.full_like(positions, round_index)])
        self._origins = torch.cat([self._origins, torch.full_like(positions, int(origin))])
        self._corrected_in = torch.cat([self._corrected_in, torch.full_like(positions, -1)])

    def correct(self, positions: Tensor, round_index: int) -> None:
        """Record that the labels of labeled pool positions int64 ``[c]`` were corrected before round
        ``round_index`` trained: their origin becomes :attr:`LabelOrigin.CORRECTION`; their labeling round stays."""
        positions = torch.as_tensor(positions, dtype=torch.int64).flatten().cpu()
        if len(positions) and not bool(self._is_labeled[positions].all()):
            raise ValueError(f"pool positions {positions[~self._is_labeled[positions]][:5].tolist()} are not labeled")
        at = torch.isin(self._order, positions)
        self._origins[at] = int(LabelOrigin.CORRECTION)
        self._corrected_in[at] = round_index

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors only: torch's weights-only checkpoint loading rejects numpy arrays."""
        return {
            "dataset_indices": self.dataset_indices.clone(),
            "labeled": self._order.clone(),
            "labeled_rounds": self._rounds.clone(),
            "labeled_origins": self._origins.clone(),
            "labeled_corrected_in": self._corrected_in.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not torch.equal(state["dataset_indices"], self.dataset_indices):
            raise ValueError(
                "the checkpoint's pool differs from this configuration's pool: resume with the same "
                "data.source, data.pool_size and data.pool_seed as the run that wrote it"
            )
        initial = self._order[self._rounds == 0].sort().values
        chosen_later = self.deferred_initial and len(initial) == 0  # a cold start's picks live in the state alone
        if not chosen_later and not torch.equal(state["labeled"][state["labeled_rounds"] == 0].sort().values, initial):
            raise ValueError(
                "the checkpoint's initial labels differ from this configuration's: resume with the same "
                "data.initial_labels (or, for a folder of images, the same labels file) as the run that wrote it"
            )
        self._is_labeled.zero_()
        self._is_labeled[state["labeled"]] = True
        self._order = state["labeled"].clone()
        self._rounds = state["labeled_rounds"].clone()
        origins = state.get("labeled_origins")
        if origins is None:  # a checkpoint written before origins were kept: they follow from how the pool started
            initial = LabelOrigin.LABELS_FILE if self._initial_from_file else LabelOrigin.RANDOM_DRAW
            origins = torch.where(self._rounds == 0, int(initial), int(LabelOrigin.ANSWER))
            if self.deferred_initial:  # a cold start's round-0 labels are answers too
                origins = torch.full_like(self._rounds, int(LabelOrigin.ANSWER))
        self._origins = origins.clone()
        corrected = state.get("labeled_corrected_in")  # absent from checkpoints written before corrections
        self._corrected_in = torch.full_like(self._rounds, -1) if corrected is None else corrected.clone()
