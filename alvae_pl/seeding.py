"""Seeds derived from a run's seed, never from global RNG state, so that a resumed run draws what it drew before."""

from __future__ import annotations

#: What each derived stream multiplies its index by, so that streams of one seed never share a seed in practice.
SHUFFLE_STREAM = 1  # the training shuffle of each epoch (SeededBatchSampler)
ACQUISITION_STREAM = 7919  # each round's acquisition (ActiveLearningLoop), index round + 1
DROPOUT_STREAM = 104_729  # each epoch's dropout masks on each rank (TaskModel), index epoch * world + rank + 1
START_STREAM = 15_485_863  # the choice of the initial labels by a strategy (ActiveLearningLoop.start), index 1
LABEL_AWARE_VAE_STREAM = 1_299_709  # each round's retraining of a label-aware VAE (ActiveLearningLoop), index round + 1


def derive_seed(seed: int, stream: int, index: int) -> int:
    """A 63-bit seed for draw ``index`` of ``stream`` in a run seeded with ``seed``.

    A linear mix, not :class:`numpy.random.SeedSequence` (the standard mixer, which hashes its entropy): every
    selection, history and published number of this project was drawn from these seeds, and a new mixer would
    change them all. Two draws collide only when ``stream * index`` values coincide within one run (e.g. epoch
    7,919's shuffle and round 0's acquisition of a run with the same seed): they then seed independent generators
    for unrelated purposes (a permutation of the labeled set, a heuristic's tie-breaking), which is harmless.
    """
    return (seed * 1_000_003 + stream * index) % (2**63)
