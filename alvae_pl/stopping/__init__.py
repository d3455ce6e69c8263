"""Stopping criteria: can we stop labeling? Each criterion is measured every round (history columns ``stop_*``,
TensorBoard ``al/stop_*``) and, configured as a rule (``active.stopping``), ends the run with its reason.

- :class:`StabilizingPredictions`: successive rounds' predictions on a fixed stop set agree (Cohen's kappa);
- :class:`MaxUncertainty`, :class:`MeanUncertainty`: the unlabeled images' uncertainty falls below a threshold;
- :class:`ValidationPlateau`: the validation metric stops improving.
"""

from alvae_pl.stopping.rule import StoppingRule, first_stop, rows_to_columns
from alvae_pl.stopping.stabilizing_predictions import StabilizingPredictions, prediction_agreement
from alvae_pl.stopping.stop_measures import STOP_COLUMNS, StopMeasures
from alvae_pl.stopping.uncertainty import MaxUncertainty, MeanUncertainty, normalized_uncertainty
from alvae_pl.stopping.validation_plateau import ValidationPlateau, metric_gains

__all__ = [
    "STOP_COLUMNS",
    "MaxUncertainty",
    "MeanUncertainty",
    "StabilizingPredictions",
    "StopMeasures",
    "StoppingRule",
    "ValidationPlateau",
    "first_stop",
    "metric_gains",
    "normalized_uncertainty",
    "prediction_agreement",
    "rows_to_columns",
]
