"""Candidate restriction to the labeled set's nearest neighbours (SEALS; Coleman et al., *Similarity search for
efficient active learning and search of rare concepts*, AAAI 2022): any heuristic, choosing among a few unlabeled
images near the labeled ones instead of the whole pool, for pools too large to embed and search every round."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Literal

import torch
from sklearn.neighbors import NearestNeighbors
from torch import Tensor

from alvae_pl.acquisition.heuristic import Heuristic, Selection
from alvae_pl.acquisition.heuristic_wrapper import HeuristicWrapper
from alvae_pl.models.label_aware_features import LabelAwareVAEFeatures
from alvae_pl.models.vae_features import FeaturesSlot

if TYPE_CHECKING:
    from alvae_pl.data.image_data import ImageData
    from alvae_pl.data.label_pool import LabelPool
    from alvae_pl.models.task_model import TaskModel

#: Which library finds the nearest neighbours; see :func:`nearest_neighbours`.
Search = Literal["auto", "faiss", "sklearn"]
SEARCHES: tuple[Search, ...] = ("auto", "faiss", "sklearn")


def faiss_available() -> bool:
    """Whether faiss (``pip install faiss-cpu``, the ``approximate`` extra) can be imported."""
    return importlib.util.find_spec("faiss") is not None


def nearest_neighbours(queries: Tensor, points: Tensor, neighbours: int, search: Search = "auto") -> Tensor:
    """Positions into ``points`` of each query's ``neighbours`` nearest points (Euclidean), exact.

    faiss's flat index (``"faiss"``; ``"auto"`` when it is installed) or scikit-learn's brute-force search
    (``"sklearn"``; ``"auto"`` otherwise): both measure every query against every point in blocks, never holding an
    ``m x n`` matrix, and agree up to float32 rounding (a tie between two points at the same distance may go either
    way).

    Args:
        queries: float ``[m, D]``.
        points: float ``[n, D]``, ``n >= 1``.
        neighbours: ``k >= 1``; more than ``n`` gives all ``n``.
        search: ``"auto"``, ``"faiss"`` or ``"sklearn"``.

    Returns:
        int64 ``[m, min(k, n)]``, each row nearest first.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    k = min(neighbours, len(points))
    queries_np = queries.detach().float().cpu().contiguous().numpy()
    points_np = points.detach().float().cpu().contiguous().numpy()
    if search == "faiss" or (search == "auto" and faiss_available()):
        if not faiss_available():
            raise ValueError("search 'faiss' needs faiss: pip install faiss-cpu (or set search to sklearn or auto)")
        import faiss

        index = faiss.IndexFlatL2(points_np.shape[1])
        index.add(points_np)
        _, positions = index.search(queries_np, k)
        return torch.from_numpy(positions).long()
    finder = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(points_np)
    return torch.from_numpy(finder.kneighbors(queries_np, return_distance=False)).long()


class NearestCandidates(HeuristicWrapper):
    """Makes ``heuristic`` choose among the unlabeled images nearest the labeled set (SEALS, Coleman et al., 2022).

    The candidates of a round are the union, over the labeled images, of each one's ``neighbours`` nearest unlabeled
    images, measured in a fixed feature space computed once per run: a task-agnostic encoder's ``V(u)`` (``encoder``:
    the paper's VAE, a contrastive or pretrained encoder, as in ``features.vae``) or, without one, the raw pixels
    scaled to ``[0, 1]``. Fixed, as in SEALS: the space does not follow the task model, so finding the neighbours
    needs no forward pass of the task model over the pool, and the task model then embeds only the candidates (at
    most ``labeled x neighbours`` images instead of the whole pool). The inner heuristic embeds, and picks among,
    those candidates exactly as it would among the whole pool; its picks are the wrapper's.

    When fewer than ``min_candidates`` images are near the labeled set, the rest are drawn uniformly from the other
    unlabeled images with the round's generator. With no labeled image yet (a cold start) every unlabeled image is a
    candidate. ``neighbours: 0`` takes no neighbours at all: the candidates are then a uniform random subset of
    ``min_candidates`` unlabeled images (a subsample, as learning loss's ``subset_size``), which keeps core-set's far
    images within reach where the neighbours, by construction the images nearest the labeled set, leave them out
    (see the covering radii in ``docs/heuristics.md``). An inner heuristic's own ``candidates`` (learning loss's
    random subset) then applies to these.

    Deterministic: candidates come in ascending pool order; the only random draw is the top-up, from the generator
    the loop seeds from (seed, round), so a resumed run and every DDP rank (each computes the same features from the
    same encoder and images, and searches them alike) get the same candidates. The features are recomputed after a
    resume, not checkpointed. The search is exact (:func:`nearest_neighbours`): what is approximate is the
    restriction of the candidates, not the neighbours.

    Cost: one pass of the encoder over the pool per run (``P x D`` floats kept in memory), then per round one
    nearest-neighbour search of the ``m`` labeled among the ``n`` unlabeled, ``m x n x D`` multiply-adds in blocks
    (faiss's are fast; ``pip install faiss-cpu``).

    Args:
        heuristic: the heuristic that embeds the candidates and picks among them (core-set, entropy, ...).
        neighbours: ``k``, unlabeled neighbours each labeled image contributes (SEALS uses 100 at ImageNet scale);
            0: none, only the random ``min_candidates``.
        min_candidates: top the candidates up at random to at least this many (keep it at least the budget).
        encoder: the fixed feature space (``None``: pixels). A label-aware VAE, retrained every round, is refused.
        search: ``"auto"`` (faiss when installed, else scikit-learn), ``"faiss"`` or ``"sklearn"``.
        batch_size: images per encoder batch when the features are computed.

    Example YAML::

        active:
          heuristic:
            class_path: alvae_pl.acquisition.NearestCandidates
            init_args:
              heuristic: {class_path: alvae_pl.acquisition.CoreSet}
              neighbours: 10
              encoder: {checkpoint: lightning_logs/vae_digits/seed_0/checkpoints/last.ckpt}
    """

    def __init__(
        self,
        heuristic: Heuristic,
        neighbours: int = 10,
        min_candidates: int = 0,
        encoder: FeaturesSlot | None = None,
        search: Search = "auto",
        batch_size: int = 512,
    ) -> None:
        if isinstance(heuristic, NearestCandidates):
            raise ValueError("NearestCandidates wraps another heuristic, not a NearestCandidates: remove one level")
        if neighbours < 0:
            raise ValueError(f"neighbours must be at least 0, got {neighbours}")
        if min_candidates < 0:
            raise ValueError(f"min_candidates must be at least 0, got {min_candidates}")
        if neighbours == 0 and min_candidates == 0:
            raise ValueError("neighbours 0 leaves only the random min_candidates: set min_candidates (>= the budget)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        if isinstance(encoder, LabelAwareVAEFeatures):
            raise ValueError(
                "NearestCandidates needs a fixed feature space, and a label-aware VAE is retrained every round: "
                "give it the paper's VAE, a contrastive or pretrained encoder, or none (pixels)"
            )
        super().__init__(heuristic)
        self.neighbours = neighbours
        self.min_candidates = min_candidates
        self.encoder = encoder
        self.search = search
        self.batch_size = batch_size
        # The loop reads these of the heuristic it drives: the inner one's needs decide.
        self.uses_model = heuristic.uses_model
        self.feature_dtype = heuristic.feature_dtype
        self.sharded = getattr(heuristic, "sharded", False)
        self._data: ImageData | None = None
        self._device = torch.device("cpu")
        self._pool_rows: Tensor | None = None  # the data rows the features below belong to
        self._pool_features: Tensor | None = None  # float32 [P, D] on the CPU

    def setup(self, data: ImageData, device: torch.device) -> None:
        super().setup(data, device)
        if self.encoder is not None:
            self.encoder.load(data.num_channels, data.image_size, device, num_classes=data.num_classes, task=data.task)
        self._data, self._device = data, device

    def pool_features(self, pool: LabelPool) -> Tensor:
        """The fixed features of every pool image, float32 ``[P, D]`` on the CPU, computed on first use."""
        if self._data is None:
            raise RuntimeError("NearestCandidates.setup must run before candidates (the loop calls it)")
        rows = pool.dataset_indices
        if self._pool_features is None or self._pool_rows is None or not torch.equal(self._pool_rows, rows):
            images = self._data.train.images
            blocks = []
            for start in range(0, len(rows), self.batch_size):
                batch = images[rows[start : start + self.batch_size].to(images.device)]
                if self.encoder is None:
                    blocks.append(batch.flatten(1).float().cpu() / 255)
                else:
                    blocks.append(self.encoder(batch.to(self._device)).float().cpu())
            self._pool_features = torch.cat(blocks) if blocks else torch.empty(0, 0)
            self._pool_rows = rows.clone()
        return self._pool_features

    def nearby(self, unlabeled: Tensor, pool: LabelPool) -> Tensor:
        """The positions among ``unlabeled`` (int64 ``[u]``) that are one of a labeled image's ``neighbours``
        nearest unlabeled images, ascending, int64 ``[c]``; all of ``unlabeled`` when nothing is labeled, none with
        ``neighbours: 0``."""
        labeled = pool.labeled
        if self.neighbours == 0:
            return unlabeled[:0]
        if len(labeled) == 0 or len(unlabeled) == 0:
            return unlabeled
        features = self.pool_features(pool)
        neighbours = nearest_neighbours(features[labeled], features[unlabeled], self.neighbours, self.search)
        return unlabeled[torch.unique(neighbours)]

    def candidates(self, unlabeled: Tensor, generator: torch.Generator, pool: LabelPool | None = None) -> Tensor:
        if pool is None:
            raise ValueError("NearestCandidates needs the label pool (the loop passes it to candidates)")
        near = self.nearby(unlabeled, pool)
        missing = min(self.min_candidates, len(unlabeled)) - len(near)
        if missing > 0:
            others = unlabeled[~torch.isin(unlabeled, near)]
            drawn = others[torch.randperm(len(others), generator=generator)[:missing]]
            near = torch.cat([near, drawn]).sort().values
        return self.heuristic.candidates(near, generator, pool)

    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        return self.heuristic.embed(model, images)

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        """The inner heuristic's picks among the candidates."""
        return self.heuristic.select(candidates, labeled, budget, generator)

    def select_sharded(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        """The inner heuristic's sharded picks (core-set, MedAL with ``sharded: true``)."""
        return self.heuristic.select_sharded(candidates, labeled, budget, generator)  # type: ignore[attr-defined]
