"""Greedy pick loops on the device, replayed as CUDA graphs of many picks on a GPU."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from alvae_pl.models.graphed_step import CudaStepGraph

#: Picks recorded in one CUDA graph: long enough that launching it costs nothing per pick, short enough that the
#: eager remainder (fewer than this many picks) stays small.
PICKS_PER_GRAPH = 64
#: Eager picks before the recording (cuBLAS handles and workspaces, allocator blocks).
WARMUP_PICKS = 2


def run_picks(
    step: Callable[[Tensor, Tensor], None], positions: Tensor, scores: Tensor, start: int = 0, graphs: bool = True
) -> None:
    """Fill ``positions[start:]`` and ``scores[start:]``, one ``step(pick_out, score_out)`` per pick, in order.

    ``step`` writes a pick (int64 ``[1]``) and its score (``[1]``) into the given one-element tensors and updates
    the loop's state in place, reading nothing on the host. Eagerly, every pick launches its handful of kernels one
    by one, and on a fast GPU the launches, not the work, set the pace (~0.2 ms per pick at 300,000 candidates on
    an H200). With ``graphs`` on a CUDA device, ``PICKS_PER_GRAPH`` consecutive picks are recorded once into a CUDA
    graph, writing into static buffers, and the graph is replayed for each following block: the same kernels on
    the same memory, hence the same picks. The remainder runs eagerly.
    """
    budget, i = len(positions), start

    def eager(count: int) -> None:
        nonlocal i
        for _ in range(count):
            step(positions[i : i + 1], scores[i : i + 1])
            i += 1

    if graphs and positions.is_cuda and budget - i >= WARMUP_PICKS + 2 * PICKS_PER_GRAPH:
        graph = CudaStepGraph()
        graph.warm_up(lambda: eager(WARMUP_PICKS))
        block_positions = positions.new_empty(PICKS_PER_GRAPH)
        block_scores = scores.new_empty(PICKS_PER_GRAPH)

        def block() -> None:
            for k in range(PICKS_PER_GRAPH):
                step(block_positions[k : k + 1], block_scores[k : k + 1])

        graph.capture(block)  # records the block; nothing runs until the first replay
        while budget - i >= PICKS_PER_GRAPH:
            graph.replay()
            positions[i : i + PICKS_PER_GRAPH].copy_(block_positions)
            scores[i : i + PICKS_PER_GRAPH].copy_(block_scores)
            i += PICKS_PER_GRAPH
    eager(budget - i)
