"""Analysis of active-learning experiments: two programs behind ``experiment.py`` (which runs them with
:mod:`alvae_pl.experiments`) and what they share.

- the report (``history``, ``statistics``, ``curves``, ``report``): mean curves, areas, paired tests;
- comparisons over all variants and several experiments (``penalty_matrix``, ``critical_difference``,
  ``label_efficiency``, written by ``comparisons``);
- the pictures and measures of feature spaces (``tsne_selection``, ``tsne_figure``, ``feature_knowledge``).

Names are imported on first use (PEP 562) so that importing one module, e.g. the history reader the experiment
runner uses, does not pay for scipy, matplotlib and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "History": "history",
    "Runs": "history",
    "load_history": "history",
    "load_experiment": "history",
    "long_format": "history",
    "write_long_csv": "history",
    "ComparisonRow": "statistics",
    "SummaryRow": "statistics",
    "compare_variants": "statistics",
    "summarize": "statistics",
    "confidence_band": "statistics",
    "paired_pvalues": "statistics",
    "write_table_csv": "statistics",
    "to_markdown": "statistics",
    "write_markdown": "statistics",
    "plot_curves": "curves",
    "PenaltyMatrix": "penalty_matrix",
    "penalty_matrix": "penalty_matrix",
    "RankTest": "critical_difference",
    "ScoreTable": "critical_difference",
    "score_table": "critical_difference",
    "friedman_nemenyi": "critical_difference",
    "nemenyi_critical_difference": "critical_difference",
    "plot_critical_difference": "critical_difference",
    "LabelEfficiency": "label_efficiency",
    "label_efficiency": "label_efficiency",
    "labels_to_reach": "label_efficiency",
    "write_sections": "comparisons",
    "write_combined_report": "comparisons",
    "figure_to_tensorboard": "curves",
    "save_png": "curves",
    "Panel": "tsne_figure",
    "embed_tsne": "tsne_figure",
    "make_panel": "tsne_figure",
    "roles_from_indices": "tsne_figure",
    "plot_selection_panels": "tsne_figure",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
