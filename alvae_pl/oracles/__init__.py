"""Who labels the images a heuristic picks: the data set itself (a simulation) or a person (a lab's expert, through
files or a Label Studio server)."""

from alvae_pl.oracles.human_oracle import HumanOracle
from alvae_pl.oracles.label_studio_oracle import LabelStudioOracle
from alvae_pl.oracles.oracle import Answers, Oracle, Query, SimulatedOracle

__all__ = ["Answers", "HumanOracle", "LabelStudioOracle", "Oracle", "Query", "SimulatedOracle"]
