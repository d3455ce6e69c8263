"""A forward pass compiled with ``torch.compile`` for full training batches, eager for everything else."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

Output = TypeVar("Output")


class CompiledForward(Generic[Output]):
    """Calls ``function(*tensors)`` through ``torch.compile`` when they hold a full batch, eagerly otherwise.

    Why only full batches: with ``dynamic=False`` every new batch size is a new compilation (tens of seconds for
    a ResNet-18 forward and backward), and the last batch of an epoch has a different size in every round
    (``labels % batch_size``). Running that one batch eagerly costs a few milliseconds per epoch; both paths
    share the same parameters, so the result is the same training.

    With a CUDA-graph mode (``reduce-overhead``, ``max-autotune``) the whole forward and backward replay as CUDA
    graphs, so a step costs the host almost nothing; each call marks a new step for the graph trees, since a
    training step's outputs are never used after the next step begins. In-place weight resets
    (``copy_``) and fresh optimizers keep every parameter at its address, which is what the graphs require.

    If compilation fails at the first call (no Triton, no C++ compiler, an unsupported GPU...), it warns once and
    runs eagerly from then on.

    Args:
        function: ``(tensor [B, ...], ...) -> Output``; its modules' parameters are read at every call.
        batch_size: the full batch size ``B`` (of the first tensor); other sizes run eagerly.
        mode: ``torch.compile`` mode (``None`` for its default).
        backend: ``torch.compile`` backend: a name (``inductor``; ``aot_eager`` traces without generating code, for
            tests on the CPU) or a backend function.
    """

    def __init__(
        self,
        function: Callable[..., Output],
        batch_size: int,
        mode: str | None,
        backend: str | Callable[..., Any] = "inductor",
    ) -> None:
        self.function = function
        self.batch_size = batch_size
        self.mode = mode
        self.backend = backend
        self._compiled: Callable[..., Output] | None = torch.compile(
            function, mode=mode, backend=backend, dynamic=False
        )
        self._working = False
        self._cudagraphs = mode in ("reduce-overhead", "max-autotune")

    @property
    def active(self) -> bool:
        """Whether full batches still go through the compiled function (false after a failed compilation)."""
        return self._compiled is not None

    def __call__(self, *tensors: Tensor) -> Output:
        if self._compiled is None or len(tensors[0]) != self.batch_size:
            return self.function(*tensors)
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        if self._working:
            return self._compiled(*tensors)
        try:
            output = self._compiled(*tensors)
        except Exception as error:  # compilation is unavailable here: say so once, then train eagerly
            warnings.warn(
                f"torch.compile(mode={self.mode!r}, backend={self.backend!r}) failed, training eagerly instead "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                "pass --model.init_args.compile false to skip the attempt",
                stacklevel=2,
            )
            self._compiled = None
            return self.function(*tensors)
        self._working = True
        return output
