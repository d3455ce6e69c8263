"""Acquisition heuristics, one per file. Importing the package imports every heuristic, so that the command line
knows them all: ``--active.heuristic MedAL`` (a short class name) works and ``--help`` lists every one."""

from alvae_pl.acquisition.badge import BADGE
from alvae_pl.acquisition.bald import BALD
from alvae_pl.acquisition.class_balanced import ClassBalanced
from alvae_pl.acquisition.coreset import CoreSet
from alvae_pl.acquisition.entropy import Entropy
from alvae_pl.acquisition.heuristic import Heuristic, Selection
from alvae_pl.acquisition.learning_loss import LearningLoss
from alvae_pl.acquisition.least_confidence import LeastConfidence
from alvae_pl.acquisition.margin import Margin
from alvae_pl.acquisition.medal import MedAL
from alvae_pl.acquisition.nearest_candidates import NearestCandidates
from alvae_pl.acquisition.probcover import ProbCover
from alvae_pl.acquisition.random_sampling import RandomSampling
from alvae_pl.acquisition.typiclust import TypiClust

__all__ = [
    "BADGE",
    "BALD",
    "ClassBalanced",
    "CoreSet",
    "Entropy",
    "Heuristic",
    "LearningLoss",
    "LeastConfidence",
    "Margin",
    "MedAL",
    "NearestCandidates",
    "ProbCover",
    "RandomSampling",
    "Selection",
    "TypiClust",
]
