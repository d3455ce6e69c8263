"""A CPU stand-in for a CUDA graph, and a task model that records its steps into it.

``ReplayedStepGraph`` keeps a CUDA graph's contract: ``capture`` returns the step's output tensors and each
``replay`` reruns the recorded step on the captured (static) inputs, writing its results into those same output
tensors. Unlike a CUDA graph it runs the step already at capture and skips the replay that immediately follows, so
every batch still trains exactly once. Everything ``GraphedTrainStep`` and ``TaskModel`` do around the graph (warm-up
per optimizer, static inputs, recapture on new settings, eager partial batches, Lightning's step counting) then
runs on the CPU.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from alvae_pl.models.graphed_step import trainer_settings_conflict
from alvae_pl.models.task_model import TaskModel


class ReplayedStepGraph:
    def __init__(self) -> None:
        self._step: Callable[[], Any] | None = None
        self._outputs: Any = None
        self._skip_next_replay = False

    def warm_up(self, step: Callable[[], Any]) -> Any:
        return step()

    def capture(self, step: Callable[[], Any]) -> Any:
        self._step, self._outputs = step, step()
        self._skip_next_replay = True
        return self._outputs

    def replay(self) -> None:
        if self._skip_next_replay:
            self._skip_next_replay = False
            return
        fresh = self._step()
        with torch.no_grad():
            for static, value in zip(self._outputs, fresh, strict=True):
                if static is not None:
                    static.copy_(value)


class ReplayedGraphTaskModel(TaskModel):
    """``TaskModel`` whose graphed step records into ``ReplayedStepGraph``, allowed on the CPU."""

    def _new_step_graph(self) -> ReplayedStepGraph:
        return ReplayedStepGraph()

    def _cuda_graph_unsupported_reason(self, trainer: L.Trainer) -> str | None:
        return trainer_settings_conflict(trainer)

    def on_train_end(self) -> None:
        captures = self._graphed_step.captures if self._graphed_step is not None else 0
        print(f"graph captures: {captures}", file=sys.stderr)
