"""The fast training path: device-side train metrics, compiled steps, one checkpoint file per epoch or round, bf16."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import NamedTuple

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import Accuracy

from alvae_pl.acquisition.coreset import CoreSet
from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.callbacks.sharded_inference import sharded_inference
from alvae_pl.cli import main
from alvae_pl.data.image_data import ImageData, ImageSplit
from alvae_pl.models.compiled_forward import CompiledForward
from alvae_pl.models.task_model import TaskModel
from alvae_pl.models.train_metrics import EpochTrainMetrics
from alvae_pl.models.vae import VAE
from alvae_pl.models.vae_features import VAEFeatures
from tests.helpers.cli_runs import TINY, kill_switch_config, overlay, read_csv, train, without_timings

# aot_eager traces the step into a graph and runs it without generating code: the compiled path's plumbing
# (full batches compiled, the partial one eager, resets, resume) at CPU speed.
COMPILED = [
    "--model.init_args.compile=true",
    "--model.init_args.compile_backend=aot_eager",
    "--model.init_args.compile_mode=null",
]


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_epoch_train_metrics_equal_torchmetrics_and_the_mean_loss(task: str) -> None:
    generator = torch.Generator().manual_seed(0)
    classes = 5
    reference = (
        Accuracy(task="multilabel", num_labels=classes, average="micro")
        if task == "multilabel"
        else Accuracy(task="multiclass", num_classes=classes)
    )
    metrics, losses = EpochTrainMetrics(), []
    for size in (8, 8, 3):  # a last partial batch, as an epoch has
        logits = torch.randn(size, classes, generator=generator)
        if task == "multilabel":
            targets = torch.randint(0, 2, (size, classes), generator=generator)
            per_image = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none").mean(1)
            reference.update(logits.sigmoid(), targets)
        else:
            targets = torch.randint(0, classes, (size,), generator=generator)
            per_image = F.cross_entropy(logits, targets, reduction="none")
            reference.update(logits.softmax(1), targets)
        metrics.update(per_image.mean(), EpochTrainMetrics.correct_predictions(logits, targets), targets)
        losses.append(per_image)
    computed = metrics.compute()
    assert float(computed["accuracy"]) == pytest.approx(float(reference.compute()), abs=1e-6)
    assert float(computed["loss"]) == pytest.approx(float(torch.cat(losses).mean()), rel=1e-6)
    metrics.reset()
    assert metrics.compute() == {}


def test_compiled_forward_compiles_full_batches_once_and_runs_the_rest_eagerly() -> None:
    graphs = []

    def counting_backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(graph)
        return graph.forward

    forward = CompiledForward(lambda x, y: x * 2 + y, batch_size=4, mode=None, backend=counting_backend)
    for size in (4, 4, 3, 4, 1):
        out = forward(torch.ones(size), torch.full((size,), 3.0))
        assert torch.equal(out, torch.full((size,), 5.0))
    assert len(graphs) == 1  # the full batch, compiled once; partial batches never trigger a compilation
    assert forward.active


def test_a_failing_compiler_warns_once_and_the_model_trains_eagerly() -> None:
    def failing_backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        raise RuntimeError("no C++ compiler on this machine")

    forward = CompiledForward(lambda x: x + 1, batch_size=2, mode=None, backend=failing_backend)
    with pytest.warns(UserWarning, match="training eagerly instead .*compile false"):
        assert torch.equal(forward(torch.zeros(2)), torch.ones(2))
    assert not forward.active
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        assert torch.equal(forward(torch.zeros(2)), torch.ones(2))


#: Learning loss with batch 16 over 60/120/180 labels: every epoch ends with a partial batch.
LOSSNET_BATCH_16 = ("digits_lossnet.yaml", "--data.batch_size=16")


@pytest.mark.slow
def test_compiled_training_killed_and_resumed_gives_the_eager_records(tmp_path: Path, reference_run) -> None:
    # Batch 16 over 60/120/180 labels: every epoch ends with a partial batch, which runs eagerly. Learning loss:
    # the loss-prediction head trains on the compiled backbone's block outputs. Killed at the checkpoint of the
    # first round's last epoch (after acquisition, weight reset and new optimizer), then resumed.
    batch = "--data.batch_size=16"
    expected = reference_run(*LOSSNET_BATCH_16)  # eager: the CPU's default
    folder = tmp_path / "compiled"
    folder.mkdir()
    switch = folder / "kill.yaml"
    switch.write_text(kill_switch_config("{at_checkpoint_of_epoch: 1}"))
    killed = train("digits_lossnet.yaml", folder, batch, *COMPILED, "--config", str(switch))
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = train("digits_lossnet.yaml", folder, batch, *COMPILED, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "training eagerly" not in resumed.stderr
    actual = folder / "digits_lossnet" / "seed_0"
    assert read_csv(actual / "labeled.csv") == read_csv(expected / "labeled.csv")
    assert without_timings(read_csv(actual / "history.csv")) == without_timings(read_csv(expected / "history.csv"))


@pytest.mark.parametrize(
    ("every", "min_interval", "written_at"),
    [
        ("epoch", 0, [0, 1, 2, 3, 4, 5, 6, 7, 8]),
        ("epoch", 1e9, [1, 4, 8]),  # epochs of a round within the interval are skipped, round ends never
        ("round", 0, [1, 4, 8]),
    ],
)
def test_one_checkpoint_file_written_every_epoch_or_every_round(
    tmp_path: Path, every: str, min_interval: float, written_at: list
) -> None:
    probe = tmp_path / "probe.yaml"
    probe.write_text("trainer:\n  callbacks:\n    - class_path: tests.helpers.checkpoint_probe.CheckpointProbe\n")
    quick = ["--trainer.enable_progress_bar=false", "--data.initial_labels=60", "--data.batch_size=30"]
    schedule = [
        "--active.budget=60",
        "--active.max_labels=180",
        "--active.epochs_first=2",
        "--active.epochs_increment=1",
    ]
    cli = main(
        [
            "fit",
            "--config",
            "configs/digits_random.yaml",
            *TINY,
            "--config",
            str(probe),
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--checkpoint.every={every}",
            f"--checkpoint.min_interval={min_interval}",
            *quick,
            *schedule,
        ]
    )
    run = tmp_path / "digits_random" / "seed_0"
    assert next(c for c in cli.trainer.callbacks if type(c).__name__ == "CheckpointProbe").epochs == written_at
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    history = read_csv(run / "history.csv")
    # A round's seconds add up: training, evaluation, acquisition and checkpoint writing, each recorded.
    assert all(float(row["eval_seconds"]) > 0 and float(row["checkpoint_seconds"]) >= 0 for row in history)
    assert float(history[1]["checkpoint_seconds"]) > 0  # round one's epochs and round zero's last checkpoint


@pytest.mark.slow
def test_a_round_killed_mid_way_resumes_from_its_start_with_round_checkpoints(tmp_path: Path, reference_run) -> None:
    every_round = "--checkpoint.every=round"
    # BALD (dropout in training): the same reference run as the kill test of test_active_learning_loop.py.
    expected = reference_run("digits_entropy.yaml", *overlay("bald.yaml"))  # checkpointed every epoch
    folder = tmp_path / "killed"
    folder.mkdir()
    switch = folder / "kill.yaml"
    # Round one (120 labels, batch 30: 4 steps per epoch) starts at step 4; step 9 is in its second epoch.
    switch.write_text(kill_switch_config("{at_step: 9}"))
    killed = train("digits_entropy.yaml", folder, *overlay("bald.yaml"), every_round, "--config", str(switch))
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = train("digits_entropy.yaml", folder, *overlay("bald.yaml"), every_round, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    actual = folder / "digits_entropy" / "seed_0"
    assert read_csv(actual / "labeled.csv") == read_csv(expected / "labeled.csv")
    assert without_timings(read_csv(actual / "history.csv")) == without_timings(read_csv(expected / "history.csv"))


def test_bf16_mixed_trains_evaluates_and_embeds_with_vae_features_and_loss_prediction(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, 3, (8,), generator=generator)
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    vae_trainer = L.Trainer(max_steps=1, **quiet)
    vae_trainer.fit(VAE(), DataLoader(TensorDataset(images, torch.zeros(8)), batch_size=8))
    vae_checkpoint = tmp_path / "vae.ckpt"
    vae_trainer.save_checkpoint(vae_checkpoint)

    # Training: the task loss and the loss-prediction head fed with alpha * V(u), under bf16 autocast.
    vae = VAEFeatures(str(vae_checkpoint))  # one object for both consumers of eq. 6
    model = TaskModel(num_classes=3, num_channels=1, loss_prediction=True, vae=vae)
    trainer = L.Trainer(precision="bf16-mixed", max_steps=2, **quiet)
    trainer.fit(model, DataLoader(TensorDataset(images, targets), batch_size=4))
    assert set(model.train_epoch_metrics()) == {"train/loss", "train/accuracy", "train/loss_prediction"}
    assert all(math.isfinite(value) for value in model.train_epoch_metrics().values())

    # Evaluation and acquisition passes run in the trainer's precision and hand float32 to metrics and selections.
    split = ImageSplit(images, targets)
    features = FeatureSpace(vae)
    features.setup(ImageData(split, split, split, "multiclass", ("a", "b", "c")), model.device)
    with trainer.precision_plugin.forward_context(), torch.inference_mode():
        assert model(images).dtype == torch.bfloat16  # autocast is on in that context

    def compute(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": model(images[rows]), "loss": model.predict_loss(images[rows])} | features.embed(
            model, images[rows]
        )

    outputs = sharded_inference(trainer, model, len(images), compute, batch_size=3, description="bf16")
    assert {name: value.dtype for name, value in outputs.items()} == dict.fromkeys(
        ("logits", "loss", "task", "vae"), torch.float32
    )
    assert all(torch.isfinite(value).all() for value in outputs.values())
    assert outputs["vae"].shape == (8, model.vae.latent_dim) and outputs["task"].shape == (8, 512)
    points, _ = features.combine(outputs, {})
    assert CoreSet().greedy(points, points[:0], 3, torch.Generator().manual_seed(0)).positions.unique().numel() == 3


# ------------------------------------------------------------------------------------------- graphed step
def test_graphed_step_trains_as_the_plain_loop_and_records_once_per_optimizer_and_setting() -> None:
    from alvae_pl.models.graphed_step import GraphedTrainStep
    from tests.helpers.replayed_graph import ReplayedStepGraph

    class Outputs(NamedTuple):
        loss: torch.Tensor

    def run(graphed: bool) -> tuple[list[torch.Tensor], int]:
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 3)
        compute = lambda x, y: Outputs(F.cross_entropy(layer(x), y))  # noqa: E731
        step = GraphedTrainStep(compute, batch_size=8, new_graph=ReplayedStepGraph, warmup_steps=2)
        generator = torch.Generator().manual_seed(1)
        weights = []
        for round_index in range(2):  # a fresh optimizer per round, as the active-learning loop builds
            optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
            for index in range(6):
                x, y = torch.randn(8, 4, generator=generator), torch.randint(0, 3, (8,), generator=generator)
                if index == 4:
                    optimizer.param_groups[0]["lr"] = 0.05  # as an LR scheduler would
                if graphed:
                    step.run(optimizer, x, y, settings=round_index)
                    assert all(p.grad is None for p in layer.parameters())
                else:
                    optimizer.zero_grad()
                    compute(x, y).loss.backward()
                    optimizer.step()
            weights.append(layer.weight.detach().clone())
        return weights, step.captures

    graphed_weights, captures = run(graphed=True)
    plain_weights, _ = run(graphed=False)
    assert all(torch.equal(g, p) for g, p in zip(graphed_weights, plain_weights, strict=True))
    # Per round: 2 warm-up steps, capture at step 3; the LR change at step 5 drops the graph (2 warm-ups, no
    # capture left in the round's 6 steps).
    assert captures == 2


def test_graphed_training_on_digits_gives_the_records_of_automatic_optimisation(tmp_path: Path, reference_run) -> None:
    # Learning loss, batch 16 over 60/120/180 labels: partial batches run eagerly between graph replays, the loss
    # head's detach switch changes the recorded step mid-round, and every round brings a new optimizer.
    expected = reference_run(*LOSSNET_BATCH_16)  # automatic optimisation: the CPU's default
    graphed = train(
        "digits_lossnet.yaml",
        tmp_path / "graphed",
        "--data.batch_size=16",
        "--model.class_path=tests.helpers.replayed_graph.ReplayedGraphTaskModel",
        "--model.init_args.cuda_graph=true",
    )
    assert graphed.returncode == 0, graphed.stderr[-3000:]
    assert "run eagerly" not in graphed.stderr
    assert "Training steps of 16 images run as one CUDA graph" in graphed.stderr
    # Rounds of 2, 3, 4 epochs with 3, 7, 11 full batches per epoch: one capture in round 0 (the loss head's detach
    # switch comes after epoch 1.2), two in rounds 1 and 2 (before and after the switch), each after 3 warm-ups.
    assert int(graphed.stderr.split("graph captures: ")[1].split()[0]) == 5
    actual = tmp_path / "graphed" / "digits_lossnet" / "seed_0"
    assert read_csv(actual / "labeled.csv") == read_csv(expected / "labeled.csv")
    assert without_timings(read_csv(actual / "history.csv")) == without_timings(read_csv(expected / "history.csv"))
    # Lightning counted every step (the graph applied it inside Lightning's optimizer.step).
    steps = [
        torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
        for folder in (expected, actual)
    ]
    assert steps[0] == steps[1] > 0


def test_cuda_graph_true_where_it_cannot_run_warns_and_trains_eagerly() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, 3, (8,), generator=generator)
    model = TaskModel(num_classes=3, num_channels=1, cuda_graph=True)
    assert not model.automatic_optimization
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    before = model.net.fc.weight.detach().clone()
    with pytest.warns(UserWarning, match="cuda_graph is on but training does not run on a CUDA GPU"):
        trainer.fit(model, DataLoader(TensorDataset(images, targets), batch_size=4))
    assert trainer.global_step == 2
    assert not torch.equal(model.net.fc.weight, before)
    assert TaskModel(num_classes=3, num_channels=1).automatic_optimization  # default: off on the CPU


def test_epoch_train_metrics_reach_tensorboard_callback_metrics_and_the_progress_bar(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, 3, (8,), generator=generator)
    model = TaskModel(num_classes=3, num_channels=1)
    logger = TensorBoardLogger(str(tmp_path), name="metrics", version="v")
    trainer = L.Trainer(max_epochs=2, logger=logger, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, DataLoader(TensorDataset(images, targets), batch_size=4))

    last_epoch = model.train_epoch_metrics()
    assert set(last_epoch) == {"train/loss", "train/accuracy"}
    assert {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")} == last_epoch
    assert {k: v for k, v in trainer.progress_bar_metrics.items() if k.startswith("train/")} == last_epoch
    events = EventAccumulator(str(tmp_path / "metrics" / "v")).Reload()
    # One point per epoch, at the epoch's last step (2 steps per epoch), as self.log(on_epoch=True) places them.
    loss = events.Scalars("train/loss")
    assert [point.step for point in loss] == [1, 3]
    assert loss[-1].value == pytest.approx(last_epoch["train/loss"], rel=1e-6)
    assert [point.value for point in events.Scalars("epoch")] == [0, 1]


def test_a_step_that_cannot_be_recorded_warns_once_and_trains_eagerly() -> None:
    from alvae_pl.models.graphed_step import GraphedTrainStep
    from tests.helpers.replayed_graph import ReplayedStepGraph

    class Unrecordable(ReplayedStepGraph):
        def capture(self, step):  # noqa: ANN001, ANN201
            raise RuntimeError("operation not permitted when stream is capturing")

    class Outputs(NamedTuple):
        loss: torch.Tensor

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    step = GraphedTrainStep(lambda x, y: Outputs(F.cross_entropy(layer(x), y)), 8, Unrecordable, warmup_steps=1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    step.run(optimizer, x, y, settings=None)  # the warm-up step
    before = layer.weight.detach().clone()
    with pytest.warns(UserWarning, match="recording the training step as a CUDA graph failed"):
        step.run(optimizer, x, y, settings=None)
    assert not torch.equal(layer.weight, before)  # the batch was still trained on
    assert step.failed and not step.handles(x) and step.captures == 0  # later batches go to the eager path
