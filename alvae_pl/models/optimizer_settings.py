"""Optimizer settings checked where they are given, so that a bad value is refused before a run writes anything."""

from __future__ import annotations

import math


def check_optimizer_settings(lr: float, weight_decay: float, momentum: float | None = None) -> None:
    """Raise a one-line ``ValueError`` naming the ``model.init_args`` option that PyTorch's optimizer would refuse
    later (with ``Invalid learning rate: -0.1`` and no option name)."""
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"model.init_args.lr is the learning rate, a number > 0, got {lr}")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise ValueError(f"model.init_args.weight_decay must be a number >= 0, got {weight_decay}")
    if momentum is not None and not 0 <= momentum < 1:
        raise ValueError(f"model.init_args.momentum must be in [0, 1), got {momentum}")
