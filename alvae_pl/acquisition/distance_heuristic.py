"""What core-set and MedAL share: a greedy pick, one image at a time, by distances in a feature space."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alvae_pl.acquisition.distances import DEFAULT_CHUNK_SIZE, FeatureDtype
from alvae_pl.acquisition.distances import feature_dtype as dtype_of
from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.acquisition.heuristic import Heuristic, Selection

if TYPE_CHECKING:
    from alvae_pl.data.image_data import ImageData
    from alvae_pl.models.task_model import TaskModel

#: ``greedy(candidates [n, D], labeled [m, D], budget, generator, chunk_size) -> Selection``
GreedyPick = Callable[[Tensor, Tensor, int, "torch.Generator | None", int], Selection]


class FeatureSpaceHeuristic(Heuristic):
    """Embeds candidates and the labeled set in ``features``; the subclass's ``select`` picks among them (TypiClust,
    ProbCover, and through :class:`DistanceHeuristic` core-set and MedAL).

    Args:
        features: the space distances are measured in (default: task features only; name a VAE checkpoint
            for the paper's ``[T_f(u), alpha * V(u)]``, eq. 6).
        chunk_size: rows per block of candidate-to-labeled distances; memory ``4 * chunk_size**2`` bytes.
        feature_dtype: the precision the features are gathered and kept in: ``float32``, or ``float16`` /
            ``bfloat16`` for half the memory (distances are still computed in float32, on chunks upcast from them;
            float16 overflows above 65504, bfloat16 keeps 8 bits of mantissa). Core-set and MedAL take it (and BADGE);
            TypiClust and ProbCover, which select on float32 copies of their points, do not.
        sharded: under DDP, select on every rank's shard of the candidates without gathering their features anywhere
            (``alvae_pl.acquisition.distributed_selection``; core-set and MedAL): memory per rank falls with the
            number of ranks, and the picks equal one process's up to float32 rounding (core-set runs its dense
            algorithm). Not with ``normalize: true`` VAE features yet (the blocks' mean norms would need a reduction).
    """

    uses_labeled = True
    #: ``sharded_greedy(candidates [n_r, D], rows [n_r], labeled [m_r, D], budget, generator, chunk_size)``, on every
    #: DDP rank's shard (see ``alvae_pl.acquisition.distributed_selection``); ``None``: no sharded selection.
    sharded_greedy: Callable[..., Selection] | None = None

    def __init__(
        self,
        features: FeatureSpace | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        feature_dtype: FeatureDtype = "float32",
        sharded: bool = False,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if sharded and self.sharded_greedy is None:
            raise ValueError(
                f"{type(self).__name__} has no sharded selection: set sharded false (core-set, MedAL have)"
            )
        self.sharded = sharded
        self.feature_dtype = dtype_of(feature_dtype)
        self.features = features if features is not None else FeatureSpace()
        self.chunk_size = chunk_size

    def setup(self, data: ImageData, device: torch.device) -> None:
        self.features.setup(data, device)

    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        return self.features.embed(model, images)


class DistanceHeuristic(FeatureSpaceHeuristic):
    """A :class:`FeatureSpaceHeuristic` whose pick is the subclass's ``greedy`` function on the combined features
    (core-set, MedAL). Takes ``features``, ``chunk_size``, ``feature_dtype`` and ``sharded``."""

    @staticmethod
    @abstractmethod
    def greedy(
        candidates: Tensor, labeled: Tensor, budget: int, generator: torch.Generator | None, chunk_size: int
    ) -> Selection:
        """The subclass's pick (a :data:`GreedyPick`): ``budget`` positions into ``candidates`` ``[n, D]``, given
        the labeled points ``[m, D]``."""

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        points, labeled_points = self.features.combine(candidates, labeled)
        return type(self).greedy(points, labeled_points, budget, generator, self.chunk_size)

    def select_sharded(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        """``select`` on this rank's shard of the outputs (``"row"``: int64 ``[n_r]``, the rows' positions among all
        candidates), called on every rank with generators in the same state; returns the whole selection on each."""
        if self.features.normalize:
            raise ValueError(
                "sharded selection does not normalise feature blocks yet: set normalize false or sharded false"
            )
        points, labeled_points = self.features.combine(candidates, labeled)
        assert self.sharded_greedy is not None  # checked in __init__
        return type(self).sharded_greedy(points, candidates["row"], labeled_points, budget, generator, self.chunk_size)
