"""The whole training step replayed as a real CUDA graph (``GraphedTrainStep``): needs a CUDA GPU, skipped elsewhere.

On the CPU, ``test_fast_training.py`` runs the same orchestration with a stand-in graph; here the real graph must
train exactly as eager steps do.
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from alvae_pl.models.graphed_step import GraphedTrainStep
from alvae_pl.models.task_model import TaskModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def deterministic_cudnn() -> None:
    previous = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous


def synthetic_batches(count: int, batch: int, findings: int = 14) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8, generator=generator).cuda(),
            torch.randint(0, 2, (batch, findings), generator=generator).cuda(),
        )
        for _ in range(count)
    ]


def test_graph_replays_train_as_eager_steps_across_optimizers_and_settings() -> None:
    batches = synthetic_batches(10, 16)

    def run(graphed: bool) -> tuple[list[float], list[torch.Tensor], int]:
        model = TaskModel(num_classes=14, num_channels=1, task="multilabel", loss_prediction=True).cuda()
        step = GraphedTrainStep(model.compute_step, batch_size=16)
        losses = []
        for _ in range(2):  # two rounds: weights reset in place, a new optimizer
            model.reset_to_initial_weights()
            optimizer = model.configure_optimizers()
            for index, (images, targets) in enumerate(batches):
                model._detach_loss_head = index >= 7  # the loss head's switch: a new recording
                if graphed:
                    outputs = step.run(optimizer, images, targets, settings=model._detach_loss_head)
                else:
                    optimizer.zero_grad(set_to_none=True)
                    outputs = model.compute_step(images, targets)
                    outputs.loss.backward()
                    optimizer.step()
                losses.append(float(outputs.loss.detach()))
        return losses, [p.detach().clone() for p in model.parameters()], step.captures

    graphed_losses, graphed_weights, captures = run(graphed=True)
    eager_losses, eager_weights, _ = run(graphed=False)
    assert captures == 2  # per round: 3 warm-ups, capture at step 4; after the switch, 3 warm-ups and 0 captures
    assert graphed_losses == pytest.approx(eager_losses, rel=1e-4)
    for graphed, eager in zip(graphed_weights, eager_weights, strict=True):
        torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_default_fit_on_one_gpu_replays_the_step_and_trains_as_eager(precision: str) -> None:
    images, targets = (torch.cat(parts).cpu() for parts in zip(*synthetic_batches(8, 32), strict=True))

    def fit(**options: object) -> tuple[TaskModel, L.Trainer]:
        model = TaskModel(num_classes=14, num_channels=1, task="multilabel", **options)
        trainer = L.Trainer(
            accelerator="gpu",
            devices=1,
            precision=precision,
            max_epochs=3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
        )
        trainer.fit(model, DataLoader(TensorDataset(images, targets), batch_size=32))
        return model, trainer

    graphed, graphed_trainer = fit()
    assert not graphed.automatic_optimization and graphed._graphed_step.captures == 1
    assert graphed_trainer.global_step == 24
    eager, _ = fit(cuda_graph=False, compile=False)
    graphed_metrics, eager_metrics = graphed.train_epoch_metrics(), eager.train_epoch_metrics()
    assert all(math.isfinite(value) for value in graphed_metrics.values())
    tolerance = 1e-4 if precision == "32-true" else 2e-2
    assert graphed_metrics == pytest.approx(eager_metrics, rel=tolerance)
