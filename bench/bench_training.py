"""Training throughput (images per second) of alvae-pl's data path against a bare PyTorch loop and the PIL path.

    python bench/bench_training.py [--images 4096] [--batch-size 128] [--epochs 3] [--image-size 28] [--device cpu]

Data: a synthetic ChestMNIST-like ``.npz`` written to ``/tmp`` (uint8 grayscale ``N x S x S`` images, 14 0/1
findings per image, stored ``uint8`` as MedMNIST stores them), read back through ``NpzSource``. Every training row
fits the same ``TaskModel`` (ResNet-18, random init from ``init_seed=0``, multi-label BCE, SGD lr 1e-3 momentum 0.9)
on the same images with the same batch size:

- ``alvae-pl``: ``lightning.Trainer.fit`` on ``ActiveDataModule(train_on="pool")``, with what the project's
  ``ActiveLearningLoop`` sets (``reload_dataloaders_every_n_epochs=1``) and the unmodified ``training_step``
  (train metrics summed on the device every step, logged per epoch) and defaults: on CUDA the whole step runs as
  one CUDA graph (``cuda_graph``, ``GraphedTrainStep``) and the data is copied to the GPU once; no logger,
  checkpoints, progress bar, model summary or validation.
- ``alvae-pl, step without train metrics`` (CPU only): the same, with a ``training_step`` that only computes the
  loss: the gap to the row above is what the train metrics cost, the gap to the bare loop is Lightning's loop.
- On CUDA also: ``alvae-pl`` with ``cuda_graph`` off (then ``torch.compile``, mode ``reduce-overhead``, replays
  forward and backward as CUDA graph trees and the SGD step runs eagerly), with compilation off too (eager); with
  ``precision="bf16-mixed"``; and the ceilings: the whole
  step (zero_grad, forward, loss, backward, SGD step) captured in one CUDA graph and replayed per batch, data on
  the GPU, in fp32 and in bf16 autocast with channels-last memory. The alvae-pl row's ratio to the fp32 ceiling is
  printed last.
- ``bare loop``: ``torch.randperm`` + one uint8 gather per batch, ``TaskModel`` forward (normalisation on the
  device), the same loss, ``zero_grad`` / ``backward`` / ``SGD.step``; no Lightning.
- ``PIL per sample``: what medmnist's ``Dataset`` does: ``PIL.Image.fromarray`` per sample, then
  ``Compose([ToTensor(), Normalize([0.5], [0.5])])``, a shuffling ``DataLoader`` with the default collate
  (``num_workers`` 0 and 2); the float batches go straight into the ResNet (they are already normalised, with the
  same mean and std the model would use), the rest of the loop is the bare loop.

Each row trains one warm-up epoch (dropped) and then ``--epochs`` measured epochs; an epoch's time runs from its
start to the next epoch's start, so a Lightning epoch also pays its end-of-epoch metric computation and the next
epoch's loader rebuild. ``--repeats`` runs every row again, interleaved, and pools the epochs. The table gives
images per second at the fastest and at the median epoch: on a shared CPU other processes only ever slow an epoch
down, so the fastest epoch is the better estimate of what the path itself costs (the header prints the load
average seen during the run). The "data only" rows iterate each path's loader, with the batch moved to the
device, and no model (``--loader-epochs`` passes after one warm-up).

A second table times the Lightning path's extras alone: the per-epoch ``train_dataloader()`` rebuild, the
train-metric update (queued device work only) and the epoch's compute, and, with a one-layer stand-in for the
ResNet (so that a step costs almost only its framework, never compiled), Lightning's loop against the bare loop,
and what the project adds on top of Lightning's loop: the training step's metric updates and the progress bar
(``ThrottledProgressBar``, which the CLI installs), with Lightning's default bar for scale.
``torch.set_num_threads(--threads)`` is set once, before any measurement, and holds for every row; DataLoader
workers run one thread each (PyTorch's default inside workers). The default is one thread: on a 2-core machine
that other jobs share, two OpenMP threads stall whenever another process takes a core (ResNet-18 steps of 128
images swung between 0.16 s and 3.7 s), while one thread stays within a few percent (0.30-0.33 s).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without installing the package.
sys.path.insert(0, str(REPO_ROOT))

from alvae_pl.callbacks.progress_bar import ThrottledProgressBar  # noqa: E402
from alvae_pl.data.datamodule import ActiveDataModule  # noqa: E402
from alvae_pl.data.sources import NpzSource  # noqa: E402
from alvae_pl.models.backbone import BackboneOutputs, resnet_forward  # noqa: E402
from alvae_pl.models.task_model import TaskModel  # noqa: E402
from alvae_pl.models.train_metrics import EpochTrainMetrics  # noqa: E402

NUM_FINDINGS = 14  # ChestMNIST's findings per image
CEILING_FP32 = "ceiling: whole step in one CUDA graph, fp32"
CEILING_BF16 = "ceiling: whole step in one CUDA graph, bf16 + channels_last"
ALVAE = "alvae-pl (Trainer + ActiveDataModule)"
LAST_EPOCH_METRICS: dict[str, float] = {}  # train metrics of the latest Lightning row's last epoch
EVAL_IMAGES = 256  # val/test split size; never used for training, only required by the file layout


# ------------------------------------------------------------------------------------------------------- data
def write_chestmnist_like(path: Path, images: int, image_size: int, seed: int = 0) -> None:
    """Writes a MedMNIST-layout ``.npz``: uint8 ``N x S x S`` images and uint8 ``(N, 14)`` 0/1 findings.

    Images are smooth random blobs plus noise (content does not change the cost of any path); about 5% of
    findings are positive, roughly ChestMNIST's rate.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    grid = np.linspace(-1.0, 1.0, image_size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    for split, count in (("train", images), ("val", EVAL_IMAGES), ("test", EVAL_IMAGES)):
        centres = rng.uniform(-0.5, 0.5, size=(count, 2, 1, 1)).astype(np.float32)
        blob = np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) * 6.0)
        noise = rng.normal(0.0, 0.08, size=(count, image_size, image_size)).astype(np.float32)
        arrays[f"{split}_images"] = np.clip((blob + noise) * 255.0, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = (rng.random((count, NUM_FINDINGS)) < 0.05).astype(np.uint8)
    np.savez(path, **arrays)


class PerSamplePILDataset(Dataset):
    """medmnist's 2D ``Dataset.__getitem__``: ``PIL.Image.fromarray`` per sample, then the transform.

    ``images``: uint8 ``(N, S, S)`` numpy; ``labels``: ``(N, K)`` numpy. Returns float ``[1, S, S]`` and int
    ``(K,)`` numpy, which the default collate turns into ``[B, 1, S, S]`` and int64 ``[B, K]``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Image.Image], Tensor]) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, np.ndarray]:
        image, target = self.images[index], self.labels[index].astype(int)
        return self.transform(Image.fromarray(image)), target


def pil_loader(npz_path: Path, batch_size: int, num_workers: int) -> DataLoader:
    """The loader of medmnist's getting-started example: per-sample PIL + ToTensor + Normalize, shuffled."""
    with np.load(npz_path) as npz:
        images, labels = npz["train_images"], npz["train_labels"]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=[0.5], std=[0.5])])
    return DataLoader(
        PerSamplePILDataset(images, labels, transform), batch_size=batch_size, shuffle=True, num_workers=num_workers
    )


def randperm_batches(images: Tensor, targets: Tensor, batch_size: int) -> Iterable[tuple[Tensor, Tensor]]:
    """The bare loop's data path: one ``randperm`` per epoch, one uint8 ``[B, C, S, S]`` gather per batch."""
    for rows in torch.randperm(len(images)).split(batch_size):
        yield images[rows], targets[rows]


# ------------------------------------------------------------------------------------------------------ model
def new_model(data: ActiveDataModule, model_class: type[TaskModel] = TaskModel, **options: object) -> TaskModel:
    """The same round-0 network for every row (``init_seed=0``); ``options`` are further ``TaskModel`` arguments."""
    return model_class(
        num_classes=data.num_classes,
        num_channels=data.num_channels,
        image_size=data.image_size,
        task=data.task,
        init_seed=0,
        **options,
    )


class TaskModelWithoutTrainMetrics(TaskModel):
    """``TaskModel`` whose training step only computes the loss (compiled as the real one): no metric updates."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        self.clear_gradients_before_forward()  # as the real step does, in place of Lightning's zero_grad
        return self.step_forward(*batch)[1].mean()


class TinyTaskModel(TaskModel):
    """``TaskModel`` with one linear layer in place of the ResNet, so that a step costs almost nothing but its
    framework: timing it with and without Lightning isolates the per-step cost of Lightning's loop. Never
    compiled: the point is the framework's own cost."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs, compile=False, cuda_graph=False)
        size = self.hparams.image_size
        self.tiny = nn.Linear(self.hparams.num_channels * size * size, self.hparams.num_classes)

    def forward_features(self, images: Tensor) -> BackboneOutputs:
        """Logits ``[B, K]`` (also standing in for the embedding); no blocks."""
        logits = self.tiny(self.normalize(images).flatten(1))
        return BackboneOutputs(logits, logits, ())  # type: ignore[arg-type]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.tiny.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)


class TinyTaskModelWithoutTrainMetrics(TinyTaskModel, TaskModelWithoutTrainMetrics):
    """The tiny model with the loss-only training step."""


class EpochClock(L.Callback):
    """Epoch boundaries: ``perf_counter`` at every train-epoch start and at train end (device synchronised)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def _mark(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.marks.append(time.perf_counter())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark(pl_module)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -------------------------------------------------------------------------------------------------- measuring
def lightning_epochs(
    data: ActiveDataModule,
    model: TaskModel,
    epochs: int,
    device: torch.device,
    precision: str = "32-true",
    progress_bar: L.Callback | None = None,
) -> list[float]:
    """Seconds of each epoch of ``Trainer.fit``, warm-up epoch first (it includes any compilation).

    ``progress_bar``: a progress-bar callback to run (drawing to a discarded stream), or ``None`` for none.
    """
    clock = EpochClock()
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=epochs + 1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress_bar is not None,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        # What ActiveLearningLoop.setup sets: the train loader is rebuilt from the pool every epoch.
        reload_dataloaders_every_n_epochs=1,
        callbacks=[clock] + ([progress_bar] if progress_bar is not None else []),
    )
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        trainer.fit(model, datamodule=data)
    torch._dynamo.reset()  # every row compiles afresh; no cached graphs or recompile limits carried over
    # Printed with the row: compiled and eager rows should train alike.
    LAST_EPOCH_METRICS.update({k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if "train/" in k})
    return [end - start for start, end in zip(clock.marks, clock.marks[1:], strict=False)]


def cuda_graph_epochs(
    data: ActiveDataModule, epochs: int, batch_size: int, device: torch.device, bf16_channels_last: bool
) -> list[float]:
    """The ceiling: the whole training step (zero_grad, forward, loss, backward, SGD step) captured in one CUDA
    graph and replayed per batch, data on the device, each batch gathered into the graph's static input.

    Only full batches run (a graph has one shape); epoch seconds are scaled to all images so that rows compare.
    ``bf16_channels_last``: bf16 autocast and channels-last weights and activations.
    """
    model = new_model(data, compile=False).to(device).train()
    if bf16_channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = model.configure_optimizers()
    train = data.data.train
    images, targets = train.images.to(device), train.targets.to(device)
    static_images, static_targets = images[:batch_size].clone(), targets[:batch_size].clone()

    def step() -> None:
        optimizer.zero_grad(set_to_none=False)  # gradient buffers must keep their addresses
        with torch.autocast("cuda", torch.bfloat16, enabled=bf16_channels_last):
            x = model.normalize(static_images)
            if bf16_channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = resnet_forward(model.net, x).logits
            loss = model.per_sample_loss(logits, static_targets).mean()
        loss.backward()
        optimizer.step()

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up outside the graph: momentum buffers, cuDNN plans, allocator pools
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    full = len(images) // batch_size * batch_size
    times = []
    for _ in range(epochs + 1):
        sync(device)
        start = time.perf_counter()
        for rows in torch.randperm(len(images), device=device)[:full].split(batch_size):
            torch.index_select(images, 0, rows, out=static_images)
            torch.index_select(targets, 0, rows, out=static_targets)
            graph.replay()
        sync(device)
        times.append((time.perf_counter() - start) * len(images) / full)
    return times


def manual_epochs(
    model: TaskModel,
    batches: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    epochs: int,
    device: torch.device,
    normalised_input: bool = False,
) -> list[float]:
    """Seconds of each epoch of the bare loop, warm-up epoch first.

    ``normalised_input``: batches are float images already normalised (the PIL path), fed past
    ``TaskModel.normalize`` into the same ResNet; otherwise uint8 images go through ``TaskModel.forward``.
    """
    model.to(device).train()
    optimizer = model.configure_optimizers()
    times = []
    for _ in range(epochs + 1):
        sync(device)
        start = time.perf_counter()
        for images, targets in batches():
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            logits = resnet_forward(model.net, images).logits if normalised_input else model(images)
            loss = model.per_sample_loss(logits, targets).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def loader_epochs(
    batches: Callable[[], Iterable[tuple[Tensor, Tensor]]], epochs: int, device: torch.device
) -> list[float]:
    """Seconds of each pass over a loader (batches moved to the device, no model), warm-up pass first."""
    times = []
    for _ in range(epochs + 1):
        sync(device)
        start = time.perf_counter()
        for images, targets in batches():
            images.to(device, non_blocking=True)
            targets.to(device, non_blocking=True)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def median_ms(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def lightning_overheads(data: ActiveDataModule, batch_size: int, device: torch.device) -> dict[str, float]:
    """Costs of the Lightning path's extras, each timed alone (milliseconds)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch_size, data.num_classes, generator=generator).to(device)
    targets = torch.randint(0, 2, (batch_size, data.num_classes), generator=generator).to(device)
    loss = torch.rand((), generator=generator).to(device)
    metrics = EpochTrainMetrics()
    steps = -(-len(data.pool) // batch_size)

    def update() -> None:
        metrics.update(loss, EpochTrainMetrics.correct_predictions(logits, targets), targets)

    def epoch_of_updates_and_compute() -> None:
        metrics.reset()
        for _ in range(steps):
            update()
        metrics.compute()
        sync(device)

    update_ms = median_ms(update, 200)  # queued work only: a step never waits for it
    epoch_ms = median_ms(epoch_of_updates_and_compute, 5)

    # Best of many epochs, over interleaved repeats: the tiny model's epochs last tens of milliseconds, so one
    # stray scheduler hiccup, or a busy neighbour for a second, shows; the fastest epoch is what the path costs.
    tiny_epochs, repeats = 20, 3
    best: dict[str, float] = {}

    def fit(name: str, model_class: type[TaskModel], bar: Callable[[], L.Callback] | None = None) -> None:
        progress_bar = bar() if bar is not None else None
        epochs = lightning_epochs(data, new_model(data, model_class), tiny_epochs, device, progress_bar=progress_bar)
        best[name] = min([best.get(name, math.inf), *epochs[1:]])

    for _ in range(repeats):
        bare_epochs = manual_epochs(
            new_model(data, TinyTaskModel), _bare_batches(data, batch_size), tiny_epochs, device
        )
        best["bare"] = min([best.get("bare", math.inf), *bare_epochs[1:]])
        fit("plain", TinyTaskModelWithoutTrainMetrics)
        fit("metrics", TinyTaskModel)
        fit("project bar", TinyTaskModel, ThrottledProgressBar)
        fit("lightning bar", TinyTaskModel, TQDMProgressBar)
    bare, fit_plain, fit_metrics = best["bare"], best["plain"], best["metrics"]
    fit_project_bar, fit_lightning_bar = best["project bar"], best["lightning bar"]
    per_step = 1e3 / steps
    return {
        "train_dataloader() rebuild": median_ms(data.train_dataloader, 20),
        "train metrics update (EpochTrainMetrics, device-side), per step": update_ms,
        "train metrics compute (one read-back), per epoch": max(epoch_ms - steps * update_ms, 0.0),
        "Lightning loop vs bare loop (tiny model, loss-only step), per step": (fit_plain - bare) * per_step,
        "project: training_step's metrics (tiny model), per step": (fit_metrics - fit_plain) * per_step,
        "project: progress bar (ThrottledProgressBar), per step": (fit_project_bar - fit_metrics) * per_step,
        "project: metrics + progress bar over Lightning's loop, per step": (fit_project_bar - fit_plain) * per_step,
        "for scale: Lightning's default TQDMProgressBar, per step": (fit_lightning_bar - fit_metrics) * per_step,
        "steps per epoch": float(steps),
    }


def _bare_batches(data: ActiveDataModule, batch_size: int) -> Callable[[], Iterable[tuple[Tensor, Tensor]]]:
    train = data.data.train
    return lambda: randperm_batches(train.images, train.targets, batch_size)


# ------------------------------------------------------------------------------------------------------- main
def summary(images: int, epoch_seconds: list[float]) -> tuple[float, float, float, float]:
    """(images/s at the fastest epoch, images/s at the median epoch, fastest, median epoch seconds)."""
    best, median = min(epoch_seconds), statistics.median(epoch_seconds)
    return images / best, images / median, best, median


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4096, help="training images (the whole pool trains)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs per row, after one warm-up epoch")
    parser.add_argument("--loader-epochs", type=int, default=10, help="measured passes of the data-only rows")
    parser.add_argument("--repeats", type=int, default=1, help="run all rows this many times, interleaved")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads for every row (1: steady on a shared CPU; use the core count on a quiet one)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="num_workers of the PIL rows")
    parser.add_argument("--data", type=Path, default=None, help="where to write the .npz (default: /tmp)")
    parser.add_argument(
        "--only", nargs="+", default=None, help="run only the rows whose name contains one of these strings"
    )
    parser.add_argument("--no-extras", action="store_true", help="skip the second table (Lightning-path extras)")
    args = parser.parse_args(argv)
    if args.images < args.batch_size:
        parser.error(f"--images {args.images} is less than one batch (--batch-size {args.batch_size})")
    if min(args.epochs, args.loader_epochs, args.repeats, args.batch_size, args.threads) < 1:
        parser.error("--epochs, --loader-epochs, --repeats, --batch-size and --threads must be at least 1")
    if args.image_size < 28:
        parser.error("--image-size below 28 is too small for ResNet-18's ImageNet stem; use 28 or more")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", module="torchmetrics")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    npz_path = args.data or Path(f"/tmp/alvae_bench_chestmnist_like_{args.images}_{args.image_size}.npz")
    if not npz_path.is_file():
        write_chestmnist_like(npz_path, args.images, args.image_size)
    data = ActiveDataModule(
        NpzSource(str(npz_path), task="multilabel"),
        initial_labels=args.batch_size,
        batch_size=args.batch_size,
        num_workers=0,
        train_on="pool",
    )
    data.data  # read the file now, outside every measurement  # noqa: B018
    train = data.data.train
    n = len(train)
    pil = {workers: pil_loader(npz_path, args.batch_size, workers) for workers in args.workers}

    bare_batches = _bare_batches(data, args.batch_size)

    def alvae_pl_loader() -> DataLoader:
        data.trainer = None  # no trainer: epoch 0's shuffle, rebuilt per pass as the project's trainer does
        return data.train_dataloader()

    epochs, passes = args.epochs, args.loader_epochs
    cases: list[tuple[str, str, Callable[[], list[float]]]] = [  # (kind, name, measure: seconds, warm-up first)
        (
            "train",
            ALVAE,
            lambda: lightning_epochs(data, new_model(data), epochs, device),
        ),
        (
            "train",
            "bare loop (randperm + uint8 gather)",
            lambda: manual_epochs(new_model(data), bare_batches, epochs, device),
        ),
    ]
    if device.type == "cpu":  # on a GPU the tiny-model rows below tell the same, without another compilation
        cases.insert(
            1,
            (
                "train",
                "alvae-pl, step without train metrics",
                lambda: lightning_epochs(data, new_model(data, TaskModelWithoutTrainMetrics), epochs, device),
            ),
        )
    if device.type == "cuda":
        cases += [
            (
                "train",
                "alvae-pl, cuda_graph false (torch.compile reduce-overhead forward + backward)",
                lambda: lightning_epochs(data, new_model(data, cuda_graph=False), epochs, device),
            ),
            (
                "train",
                "alvae-pl, cuda_graph false, compile false (eager)",
                lambda: lightning_epochs(data, new_model(data, cuda_graph=False, compile=False), epochs, device),
            ),
            (
                "train",
                "alvae-pl, --trainer.precision bf16-mixed",
                lambda: lightning_epochs(data, new_model(data), epochs, device, precision="bf16-mixed"),
            ),
            (
                "train",
                CEILING_FP32,
                lambda: cuda_graph_epochs(data, epochs, args.batch_size, device, bf16_channels_last=False),
            ),
            (
                "train",
                CEILING_BF16,
                lambda: cuda_graph_epochs(data, epochs, args.batch_size, device, bf16_channels_last=True),
            ),
        ]
    for workers, loader in pil.items():
        cases.append(
            (
                "train",
                f"PIL per sample, num_workers={workers}",
                lambda loader=loader: manual_epochs(
                    new_model(data), lambda: loader, epochs, device, normalised_input=True
                ),
            )
        )
    cases += [
        (
            "data",
            "alvae-pl train_dataloader() (rebuilt per pass)",
            lambda: loader_epochs(alvae_pl_loader, passes, device),
        ),
        ("data", "bare loop (randperm + uint8 gather)", lambda: loader_epochs(bare_batches, passes, device)),
    ]
    for workers, loader in pil.items():
        cases.append(
            (
                "data",
                f"PIL per sample, num_workers={workers}",
                lambda loader=loader: loader_epochs(lambda: loader, passes, device),
            )
        )

    if args.only:  # in the order asked for

        def first_match(case: tuple[str, str, object]) -> int:
            return next((i for i, part in enumerate(args.only) if part in case[1]), len(args.only))

        cases = sorted((case for case in cases if first_match(case) < len(args.only)), key=first_match)
    loads = [os.getloadavg()[0]]
    started = time.perf_counter()
    measured: dict[tuple[str, str], list[float]] = {(kind, name): [] for kind, name, _ in cases}
    for repeat in range(args.repeats):
        for kind, name, measure in cases:
            gc.collect()
            torch.manual_seed(repeat)
            seconds = measure()[1:]  # the warm-up epoch (or pass) is dropped
            measured[kind, name] += seconds
            loads.append(os.getloadavg()[0])
            metrics = f"; last epoch {LAST_EPOCH_METRICS}" if LAST_EPOCH_METRICS else ""
            LAST_EPOCH_METRICS.clear()
            print(f"  {kind:>5}  {name}: epochs {', '.join(f'{s:.3f}' for s in seconds)} s{metrics}", file=sys.stderr)
    overheads = {} if args.no_extras else lightning_overheads(data, args.batch_size, device)
    total = time.perf_counter() - started
    if torch.get_num_threads() != args.threads:
        print(f"warning: torch threads changed to {torch.get_num_threads()} during the run", file=sys.stderr)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"\n{n} images {args.image_size}x{args.image_size}x{data.num_channels}, {data.num_classes} findings "
        f"(multi-label), batch {args.batch_size}, ResNet-18 (ImageNet stem, random init), SGD; device {args.device} "
        f"({device_name}), torch.set_num_threads({args.threads}) for every row, {os.cpu_count()} CPUs; torch "
        f"{torch.__version__}, lightning {L.__version__}; {args.repeats} repeat(s), {total:.0f} s in all; "
        f"1-min load average {min(loads):.1f}-{max(loads):.1f} during the run\n"
    )
    bare = measured.get(("train", "bare loop (randperm + uint8 gather)"))
    bare_best, bare_median = summary(n, bare)[:2] if bare else (math.nan, math.nan)
    print("| path | measured | img/s (best epoch) | img/s (median epoch) | vs bare loop (best / median) |")
    print("|---|---|---:|---:|---:|")
    for (kind, name), seconds in measured.items():
        best, median = summary(n, seconds)[:2]
        ratio = f"{best / bare_best:.2f}x / {median / bare_median:.2f}x" if kind == "train" else ""
        what = f"train, {len(seconds)} epochs" if kind == "train" else f"data only, {len(seconds)} passes"
        print(f"| {name} | {what} | {best:,.0f} | {median:,.0f} | {ratio} |")

    if overheads:
        steps = overheads.pop("steps per epoch")
        print(f"\nLightning-path extras, each timed alone ({steps:.0f} steps per epoch):\n")
        print("| extra | ms | ms per epoch |")
        print("|---|---:|---:|")
        for name, ms in overheads.items():
            per_epoch = ms * steps if "per step" in name else ms
            print(f"| {name} | {ms:.3f} | {per_epoch:.1f} |")
    alvae_best = summary(n, measured["train", ALVAE])[0] if ("train", ALVAE) in measured else math.nan
    if bare:
        verdict = "meets" if alvae_best >= 0.9 * bare_best else "MISSES"
        ratio = alvae_best / bare_best
        print(f"\nalvae-pl reaches {ratio:.2f}x the bare loop (best epochs): {verdict} the 0.9x target.")
    if ("train", CEILING_FP32) in measured:
        ceiling = summary(n, measured["train", CEILING_FP32])[0]
        verdict = "meets" if alvae_best >= 0.8 * ceiling else "MISSES"
        print(f"alvae-pl reaches {alvae_best / ceiling:.2f}x the fp32 CUDA-graph ceiling: {verdict} the 0.8x target.")
    if overheads:
        project = overheads["project: metrics + progress bar over Lightning's loop, per step"]
        verdict = "meets" if project <= 0.1 else "MISSES"
        print(f"What the project adds per step over Lightning's loop: {project:.3f} ms: {verdict} the 0.1 ms target.")
    if max(loads) > (os.cpu_count() or 1):
        print(
            f"Warning: the load average reached {max(loads):.1f} on {os.cpu_count()} CPUs: other processes shared the "
            "CPU, so these times are noisy; prefer best-epoch numbers, rerun on a quiet machine or with --repeats."
        )


if __name__ == "__main__":
    main()
