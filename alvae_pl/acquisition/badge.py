"""BADGE (Ash et al., 2020): k-means++ seeding in the space of last-layer gradient embeddings, which picks images
that are both uncertain (long gradients) and diverse (gradients pointing different ways)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alvae_pl.acquisition.distances import LOW_PRECISION, FeatureDtype, as_float32, mv_float32, squared_norms
from alvae_pl.acquisition.distances import feature_dtype as dtype_of
from alvae_pl.acquisition.heuristic import Heuristic, Selection

if TYPE_CHECKING:
    from alvae_pl.models.task_model import TaskModel


def gradient_scale(logits: Tensor, multilabel: bool) -> Tensor:
    """``a`` ``[N, K]`` from logits ``[N, K]``: the loss gradient with respect to the logits under the predicted label.

    The gradient of that loss with respect to the final layer's weights ``[K, D]`` is the outer product ``a h^T``
    with the layer's input ``h`` ``[D]``. Multi-class (cross-entropy, predicted class ``c``): ``softmax(z) - e_c``.
    Multi-label (binary cross-entropy summed over findings, each finding predicted present when its logit is
    positive): ``sigmoid(z) - [z > 0]``.
    """
    logits = logits.float()
    if multilabel:
        return logits.sigmoid() - (logits > 0).float()
    probabilities = logits.softmax(dim=1)
    return probabilities - torch.nn.functional.one_hot(logits.argmax(dim=1), logits.shape[1]).float()


class GradientEmbeddings:
    """The gradient embeddings ``g_i = a_i (x) h_i`` (``[K * D]`` each), kept factored as ``a`` ``[n, K]`` and ``h``
    ``[n, D]``: ``n (K + D)`` numbers instead of ``n K D``, and a squared distance to one embedding costs
    ``O(n (K + D))``, since ``<a_i (x) h_i, a_j (x) h_j> = <a_i, a_j> <h_i, h_j>``. Memory grows with the pool, never
    with pool x pool or pool x K x D. Float16 or bfloat16 factors are kept so (half the memory) and upcast a chunk
    at a time: distances are float32 whatever the storage."""

    def __init__(self, scale: Tensor, embedding: Tensor) -> None:
        self.scale = scale if scale.dtype in LOW_PRECISION else scale.float()
        self.embedding = embedding if embedding.dtype in LOW_PRECISION else embedding.float()
        self.squared_norms = squared_norms(self.scale) * squared_norms(self.embedding)  # [n]

    def squared_distances_to(self, row: Tensor) -> Tensor:
        """float32 ``||g_i - g_row||^2`` for every ``i``, ``[n]``; ``row``: 0-d int64 on the embeddings' device."""
        inner = mv_float32(self.scale, as_float32(self.scale[row])) * mv_float32(
            self.embedding, as_float32(self.embedding[row])
        )
        return (self.squared_norms + self.squared_norms[row] - 2 * inner).clamp_min(0)


def kmeans_plus_plus(points: GradientEmbeddings, budget: int, generator: torch.Generator) -> Selection:
    """k-means++ seeding of ``budget`` centers among the embeddings, as BADGE's reference implementation seeds.

    The first center is the longest gradient embedding (ties: lowest index). Each next center is drawn with
    probability proportional to its squared distance to the nearest center chosen so far: with ``u``, the next of
    ``budget`` uniform numbers drawn from ``generator`` at the start, the center is the first row whose cumulative
    weight (float64) exceeds ``u`` times the total. Chosen rows weigh 0; if every remaining row coincides with a
    center, the next one is drawn uniformly among the unchosen rows. Everything stays on the embeddings' device,
    without a host synchronisation per pick.

    Returns:
        the centers in picking order, scored by their squared distance to the nearest earlier center at the time
        they were picked (the first: its squared norm).
    """
    n = len(points.squared_norms)
    device = points.squared_norms.device
    uniforms = torch.rand(budget, generator=generator, dtype=torch.float64).to(device)
    positions = torch.empty(budget, dtype=torch.int64, device=device)
    scores = torch.empty(budget, dtype=torch.float64, device=device)
    # Written in place, pick after pick: a score kept as ``nearest[row]`` would be a view that holds that pick's
    # whole [n] vector of distances alive, i.e. memory growing with pool x budget (4.5 GiB at 100,000 x 3,000).
    positions[0] = torch.nonzero(points.squared_norms == points.squared_norms.max())[0, 0]
    scores[0] = points.squared_norms[positions[0]]
    nearest = points.squared_distances_to(positions[0]).double()
    unchosen = torch.ones(n, dtype=torch.float64, device=device)
    for pick in range(budget):
        row = positions[pick]
        if pick > 0:
            total = nearest.sum()
            weights = torch.where(total > 0, nearest, unchosen)
            cumulative = weights.cumsum(dim=0)
            torch.searchsorted(cumulative, uniforms[pick] * cumulative[-1], right=True, out=row).clamp_(max=n - 1)
            torch.index_select(nearest, 0, row.reshape(1), out=scores[pick : pick + 1])
            torch.minimum(nearest, points.squared_distances_to(row), out=nearest)
        nearest.index_fill_(0, row.reshape(1), 0)
        unchosen.index_fill_(0, row.reshape(1), 0)
    return Selection(positions, scores.float())


class BADGE(Heuristic):
    """Batch Active learning by Diverse Gradient Embeddings (Ash et al., ICLR 2020).

    Each candidate is represented by the gradient of its loss under the model's own prediction with respect to the
    final layer's weights (``gradient_scale`` times the 512-d embedding T_f(u)); k-means++ seeding in that space
    (``kmeans_plus_plus``) picks the batch. The gradient's length measures uncertainty (a confident prediction has
    a near-zero gradient), the k-means++ spread measures diversity. Multi-label: each finding under its predicted
    0/1 value. Scores in ``labeled.csv``: each pick's squared distance to the nearest earlier pick.

    Args:
        feature_dtype: the precision the gradient scales and embeddings are gathered and kept in: ``float32``, or
            ``float16`` / ``bfloat16`` for half the memory (distances are still computed in float32).
    """

    def __init__(self, feature_dtype: FeatureDtype = "float32") -> None:
        self.feature_dtype = dtype_of(feature_dtype)

    def embed(self, model: TaskModel, images: Tensor) -> dict[str, Tensor]:
        outputs = model.forward_features(images)
        return {
            "gradient_scale": gradient_scale(outputs.logits, multilabel=model.task == "multilabel"),
            "embedding": outputs.embedding,
        }

    def select(
        self, candidates: dict[str, Tensor], labeled: dict[str, Tensor], budget: int, generator: torch.Generator
    ) -> Selection:
        points = GradientEmbeddings(candidates["gradient_scale"], candidates["embedding"])
        return kmeans_plus_plus(points, budget, generator)
