"""How much class information a feature space carries, measured with scikit-learn.

- ``knn_accuracy``: accuracy of a 5-nearest-neighbour classifier, 5-fold cross-validation (stratified where every
  class can be in every fold): how well the neighbourhoods the distance heuristics measure agree with the classes;
- ``kmeans_nmi``: normalised mutual information between the classes and a k-means clustering with as many clusters
  as classes (at most ``MAX_CLUSTERS``): how well the space's own structure matches the classes, without labels.

Multi-label targets (ChestMNIST) count each distinct 0/1 finding vector as a class for k-means NMI and ask k-NN for
the whole vector (subset accuracy). Used by ``experiment.py features`` and, every round, for the label-aware VAE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

NEIGHBOURS = 5
FOLDS = 5
#: k-means clusters at most: multi-label data can hold hundreds of distinct finding vectors, most of them rare.
MAX_CLUSTERS = 64


@dataclass(frozen=True)
class Knowledge:
    """What one feature space knows about the classes of the test split."""

    name: str
    dim: int
    knn_accuracy: float
    kmeans_nmi: float


def class_ids(targets: np.ndarray) -> np.ndarray:
    """``[N]`` int class of each image: the label (multi-class) or the index of its distinct 0/1 vector."""
    if targets.ndim == 1:
        return targets.astype(np.int64)
    return np.unique(targets, axis=0, return_inverse=True)[1].reshape(-1)


def measure(name: str, features: np.ndarray, targets: np.ndarray, seed: int = 0) -> Knowledge:
    """k-NN accuracy and k-means NMI of ``features`` ``[N, D]`` against ``targets`` ``[N]`` or ``[N, K]`` (0/1)."""
    features = np.asarray(features, dtype=np.float64)
    if len(features) != len(targets):
        raise ValueError(f"{len(features)} feature rows for {len(targets)} targets")
    classes = class_ids(targets)
    counts = np.bincount(classes)
    # Stratified folds need every class in every fold; rare multi-label vectors cannot be, so fall back to KFold.
    folds = (
        StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
        if counts[counts > 0].min() >= FOLDS and targets.ndim == 1
        else KFold(FOLDS, shuffle=True, random_state=seed)
    )
    knn = cross_val_score(KNeighborsClassifier(NEIGHBOURS), features, targets, cv=folds).mean()
    clusters = min(len(np.unique(classes)), MAX_CLUSTERS)
    assignment = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit_predict(features)
    return Knowledge(name, features.shape[1], float(knn), float(normalized_mutual_info_score(classes, assignment)))
