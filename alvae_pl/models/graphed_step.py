"""The whole training step (zero_grad, forward, loss, backward, optimizer step) captured in one CUDA graph."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

import lightning as L
import torch
from torch import Tensor

Outputs = TypeVar("Outputs")


class StepGraph(Protocol):
    """How a step is run eagerly, recorded and replayed; ``CudaStepGraph`` on a GPU."""

    def warm_up(self, step: Callable[[], Outputs]) -> Outputs:
        """Run ``step`` eagerly, outside any graph."""

    def capture(self, step: Callable[[], Outputs]) -> Outputs:
        """Record ``step`` without running it; the returned tensors hold its results after each ``replay``."""

    def replay(self) -> None:
        """Run the recorded step again on whatever its input tensors now hold."""


class CudaStepGraph:
    """``torch.cuda.CUDAGraph`` with PyTorch's recipe: warm-up steps on a side stream, then one capture."""

    def __init__(self) -> None:
        self.graph: torch.cuda.CUDAGraph | None = None

    def warm_up(self, step: Callable[[], Outputs]) -> Outputs:
        # A side stream, as PyTorch's whole-network capture recipe does: the first steps allocate the optimizer's
        # state and cuDNN's workspaces, which must exist before capture and must not land in the graph's pool.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            outputs = step()
        torch.cuda.current_stream().wait_stream(side)
        return outputs

    def capture(self, step: Callable[[], Outputs]) -> Outputs:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            return step()

    def replay(self) -> None:
        if self.graph is None:
            raise RuntimeError("nothing to replay: capture a step first")
        self.graph.replay()


class GraphedTrainStep(Generic[Outputs]):
    """Full training batches run as one replayed graph: the host launches one graph per step, not ~500 kernels.

    A ResNet-18 step on 128 small images costs a GPU about 2 ms; launched kernel by kernel (forward, backward,
    the optimizer's foreach kernels) and driven by Lightning's loop, it costs the host more than that, so the GPU
    waits. Replayed as one graph, the host's part is a few tens of microseconds and the GPU never waits.

    What a graph requires, and how it is kept:

    - Fixed addresses: the batch is copied into static input tensors; parameters keep their addresses (the
      round-start weight reset copies in place); gradients are set to ``None`` before the recorded backward, so
      the graph allocates and refills them itself; the optimizer's state must exist before capture, so each new
      optimizer first runs ``warmup_steps`` ordinary steps, then the next full batch is captured.
    - Fixed settings: a new optimizer object (each round builds one; a resume loads another), changed
      hyper-parameters (an LR scheduler) or a changed ``settings`` key (e.g. the loss head's detach switch) drop
      the graph and start over with warm-up steps. A step is never replayed with settings it was not recorded
      with.
    - Fixed shapes: batches of another size (the last, partial batch of an epoch) run eagerly.

    After every graphed or eager step the parameters' ``.grad`` are ``None`` again: a following
    ``optimizer.step()`` (Lightning's, which counts the step) then changes nothing, and the next capture starts
    from the same state.

    Args:
        compute: ``(images [B, ...], targets [B, ...]) -> outputs`` whose ``.loss`` (0-d) is backpropagated; no
            host synchronisation and no data-dependent control flow (it is recorded once and replayed).
        batch_size: the full batch size ``B``.
        new_graph: makes a ``StepGraph`` (``CudaStepGraph``; a stand-in in tests).
        warmup_steps: eager steps of each new optimizer before capture (PyTorch's recipe uses 3 at least for DDP;
            the optimizer's momentum buffers need 1).
    """

    def __init__(
        self,
        compute: Callable[[Tensor, Tensor], Outputs],
        batch_size: int,
        new_graph: Callable[[], StepGraph] = CudaStepGraph,
        warmup_steps: int = 3,
    ) -> None:
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be at least 1 (the optimizer's state), got {warmup_steps}")
        self.compute = compute
        self.batch_size = batch_size
        self.new_graph = new_graph
        self.warmup_steps = warmup_steps
        self._graph: StepGraph | None = None
        self._outputs: Outputs | None = None
        self._static: tuple[Tensor, Tensor] | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._key: Hashable = None
        self._warmups_left = warmup_steps
        self.captures = 0  # graphs recorded so far (tests and logs)
        self.failed = False  # a recording failed: every step is the caller's to run eagerly from then on

    def handles(self, images: Tensor) -> bool:
        """Whether a batch is full and recording works (graphed); other batches are the caller's to run eagerly."""
        return len(images) == self.batch_size and not self.failed

    def run(self, optimizer: torch.optim.Optimizer, images: Tensor, targets: Tensor, settings: Hashable) -> Outputs:
        """One training step on a full batch: warm-up, capture + replay, or replay. Returns ``compute``'s outputs
        (after a capture, the graph's static tensors: read them before the next step)."""
        if not self.handles(images):
            raise ValueError(f"a graphed step takes batches of {self.batch_size} images, got {len(images)}")
        key = (settings, _hyperparameters(optimizer))
        if optimizer is not self._optimizer or key != self._key:
            self._reset(optimizer, key)
        if self._warmups_left:
            self._warmups_left -= 1
            outputs = self.new_graph().warm_up(lambda: self._step(optimizer, images, targets))
        else:
            if self._graph is None:
                static_images, static_targets = self._static = images.clone(), targets.clone()
                self._graph = self.new_graph()
                try:
                    self._outputs = self._graph.capture(lambda: self._step(optimizer, static_images, static_targets))
                except Exception as error:  # an operation that cannot be recorded: say so once, then train eagerly
                    self._give_up(error)
                    outputs = self._step(optimizer, images, targets)  # this batch, not yet trained on
                    optimizer.zero_grad(set_to_none=True)
                    return outputs
                self.captures += 1
            else:
                self._static[0].copy_(images)
                self._static[1].copy_(targets)
            self._graph.replay()
            outputs = self._outputs
        optimizer.zero_grad(set_to_none=True)
        return outputs

    def _step(self, optimizer: torch.optim.Optimizer, images: Tensor, targets: Tensor) -> Outputs:
        optimizer.zero_grad(set_to_none=True)
        outputs = self.compute(images, targets)
        outputs.loss.backward()
        optimizer.step()
        return outputs

    def _give_up(self, error: Exception) -> None:
        self.failed = True
        self._graph = self._outputs = self._static = None
        warnings.warn(
            f"recording the training step as a CUDA graph failed ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); training eagerly instead. Pass "
            "--model.init_args.cuda_graph false to skip the attempt",
            stacklevel=3,
        )

    def _reset(self, optimizer: torch.optim.Optimizer, key: Hashable) -> None:
        self._graph = self._outputs = self._static = None  # frees the old graph and its memory pool
        self._optimizer, self._key = optimizer, key
        self._warmups_left = self.warmup_steps


def trainer_settings_conflict(trainer: L.Trainer) -> str | None:
    """The trainer settings a recorded step cannot honour, whatever the device (``None``: none)."""
    if trainer.world_size > 1:
        return f"training runs on {trainer.world_size} processes (a graph would have to record their all-reduce)"
    if trainer.precision == "16-mixed":
        return "precision 16-mixed scales gradients on the host (use bf16-mixed)"
    if trainer.accumulate_grad_batches != 1:
        return "accumulate_grad_batches is not 1"
    if trainer.gradient_clip_val:
        return "gradient_clip_val is set"
    return None


def _hyperparameters(optimizer: torch.optim.Optimizer) -> tuple:
    """Every param group's plain settings (lr, momentum, ...): a recorded step bakes them in."""
    return tuple(
        tuple((name, value) for name, value in group.items() if name != "params" and isinstance(value, Hashable))
        for group in optimizer.param_groups
    )
