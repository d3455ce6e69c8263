"""alvae-pl: active learning with task-aware heuristics and task-agnostic VAE features, on Lightning."""

__version__ = "0.1.0"
