"""The task model T: a ResNet-18 classifier (or a narrower one, for tests), optionally with a jointly trained
loss-prediction head."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable
from typing import NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn

from alvae_pl.data.image_data import TaskKind
from alvae_pl.models.backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESNET18_WIDTH,
    BackboneOutputs,
    Stem,
    Weights,
    block_channels,
    build_resnet18,
    resnet_forward,
)
from alvae_pl.models.compiled_forward import CompiledForward
from alvae_pl.models.graphed_step import CudaStepGraph, GraphedTrainStep, StepGraph, trainer_settings_conflict
from alvae_pl.models.loss_prediction import LossPredictionHead, pairwise_margin_loss
from alvae_pl.models.metrics import classification_metrics, scores
from alvae_pl.models.optimizer_settings import check_optimizer_settings
from alvae_pl.models.train_metrics import EpochTrainMetrics
from alvae_pl.models.vae_features import FeaturesSlot
from alvae_pl.seeding import DROPOUT_STREAM, derive_seed


class StepOutputs(NamedTuple):
    """What one training step computes."""

    loss: Tensor  # 0-d: what backward starts from (task loss, plus the weighted margin loss with a loss head)
    task_loss: Tensor  # 0-d: mean per-image task loss
    margin_loss: Tensor | None  # 0-d: the loss-prediction head's pairwise margin loss, if it trains
    correct: Tensor  # 0-d int64: correct predictions (EpochTrainMetrics.correct_predictions)
    logits: Tensor  # [B, K], detached


class TaskModel(L.LightningModule):
    """ResNet-18 classifier for multi-class or multi-label images (uint8 batches, normalised on the device).

    Every round of active learning retrains it from the same round-0 weights: ``reset_to_initial_weights``
    restores them in place, the state captured right after construction (ImageNet weights, or a random
    initialisation seeded by ``init_seed``).

    With ``loss_prediction`` the model also trains the learning-loss head of Yoo and Kweon (2019): task loss +
    ``loss_prediction_weight`` * pairwise margin loss (paper eqs. 3-4). The head's gradient into the backbone
    stops after ``loss_detach_after`` of each round's epochs (the reference stops at 120 of 200 epochs). With
    ``vae``, the head also sees ``alpha * V(u)``, the frozen VAE encoder's mean (the paper's VAE-augmented loss
    prediction).

    Args:
        num_classes: classes (multi-class) or findings (multi-label); linked from the data.
        num_channels: image channels; linked from the data.
        image_size: image height and width; linked from the data.
        task: ``multiclass`` (cross-entropy) or ``multilabel`` (binary cross-entropy per finding).
        weights: ``null`` (random init) or ``IMAGENET1K_V1`` (the paper's ImageNet pretraining).
        stem: ``imagenet`` (7x7 stride-2 conv + max-pool) or ``small`` (3x3 stride-1 conv, no max-pool).
        width: the backbone's base width ``w`` (64: ResNet-18, the paper's model). The four residual stages have
            ``w``, ``2w``, ``4w``, ``8w`` channels and the embedding T_f(u) ``8w`` dimensions; every heuristic and
            the loss head read them off the backbone. A narrow one (e.g. 8) trains in a fraction of the time: the
            tests' profile (``tests/conf/tiny.yaml``). Random initialisation (``weights: null``) only.
        lr: SGD learning rate (paper: 0.001).
        momentum: SGD momentum (paper: 0.9).
        weight_decay: SGD weight decay.
        init_seed: seeds the random parts of the round-0 weights.
        loss_prediction: train the loss-prediction head beside the classifier.
        loss_prediction_weight: lambda, the weight of the pairwise margin loss.
        loss_margin: xi, the margin of the pairwise loss.
        loss_detach_after: share of each round's epochs after which the head stops training the backbone.
        loss_hidden_dim: width of the head's per-block layer.
        vae: task-agnostic features whose ``alpha * V(u)`` joins the head's representation: any
            :class:`~alvae_pl.models.encoder_features.EncoderFeatures` (a bare mapping: the paper's
            :class:`~alvae_pl.models.vae_features.VAEFeatures`; ``normalize`` does not apply to the head).
        compile: where the step is not replayed as one CUDA graph (``cuda_graph``; e.g. under DDP), compile the
            training forward pass with ``torch.compile`` (full batches of the DataModule's ``batch_size``; the
            last partial batch of an epoch runs eagerly). ``None`` (default): on when training on a CUDA GPU, where
            a ResNet-18 step on small images is bound by kernel launches (2.3x faster than eager, best epochs, on an
            H200), off elsewhere. Falls back to eager with one warning where compilation is unavailable.
        compile_mode: ``torch.compile`` mode; ``reduce-overhead`` replays each step as CUDA graphs.
        compile_backend: ``torch.compile`` backend (``aot_eager`` traces without generating code: for tests).
        cuda_graph: capture the whole training step (forward, loss, backward, SGD step) in one CUDA graph and
            replay it for every full batch (``GraphedTrainStep``): the host then launches one graph per step and
            the GPU never waits for it. ``None`` (default): on when training on one CUDA GPU with a precision
            other than ``16-mixed``, no gradient accumulation and no gradient clipping; otherwise off. ``true``
            where it cannot run warns once and trains eagerly. It uses manual optimisation (Lightning's
            ``on_before_optimizer_step`` hooks see no gradients) and replaces ``compile`` for full batches.
        train_auroc: also compute the training AUROC each epoch (``train/auroc``). Off by default: it stores
            every training prediction of the epoch and costs host time every step.
        dropout: probability of dropping each unit of the embedding before the classifier, in training
            (0: no dropout layer, the paper's model). BALD needs it: its Monte-Carlo passes sample dropout masks at
            acquisition time (Gal et al., 2017). Each epoch's masks are seeded from (``init_seed``, epoch, rank),
            so that a resumed run trains exactly as an uninterrupted one.
    """

    def __init__(
        self,
        num_classes: int = 10,
        num_channels: int = 3,
        image_size: int = 28,
        task: TaskKind = "multiclass",
        weights: Weights | None = None,
        stem: Stem = "imagenet",
        width: int = RESNET18_WIDTH,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        init_seed: int = 0,
        loss_prediction: bool = False,
        loss_prediction_weight: float = 1.0,
        loss_margin: float = 1.0,
        loss_detach_after: float = 0.6,
        loss_hidden_dim: int = 128,
        vae: FeaturesSlot | None = None,
        compile: bool | None = None,
        compile_mode: str | None = "reduce-overhead",
        compile_backend: str = "inductor",
        cuda_graph: bool | None = None,
        train_auroc: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # The VAE features are a module, recorded by their settings: a checkpoint holds plain values only.
        self.save_hyperparameters(ignore=["vae"])
        self.hparams["vae"] = vae.describe() if vae is not None else None
        if vae is not None and not loss_prediction:
            raise ValueError(
                "model.vae feeds VAE features to the loss-prediction head: set model.loss_prediction "
                "true, or give the VAE to the heuristic's feature space instead"
            )
        if vae is not None and vae.normalize:
            raise ValueError("model.vae.normalize applies to distances only; the loss-prediction head learns its scale")
        check_optimizer_settings(lr, weight_decay, momentum)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout is a probability in [0, 1), got {dropout}")
        if not 0.0 <= loss_detach_after <= 1.0:
            raise ValueError(f"loss_detach_after is a share of the round's epochs in [0, 1], got {loss_detach_after}")
        self.task = task
        self.num_classes = num_classes
        self.vae = vae.load(num_channels, image_size, num_classes=num_classes, task=task) if vae is not None else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            backbone_channels = 3 if weights is not None else num_channels
            self.net = build_resnet18(num_classes, backbone_channels, weights, stem, width)
            self.loss_head = (
                LossPredictionHead(
                    block_channels=block_channels(width),
                    hidden_dim=loss_hidden_dim,
                    extra_dim=self.vae.latent_dim if self.vae is not None else 0,
                )
                if loss_prediction
                else None
            )
        # Grayscale images are repeated to 3 channels only for the ImageNet-pretrained first convolution.
        self.repeat_channels = 3 if weights is not None and num_channels == 1 else 1
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if weights is not None else ((0.5,) * num_channels,) * 2
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        # A plain attribute, not a buffer: it must not travel into checkpoints or be overwritten by them.
        self._initial_state = copy.deepcopy(self._trainable_state())
        self._detach_loss_head = False
        self.epoch_train_metrics = EpochTrainMetrics()
        self.train_auroc = classification_metrics(task, num_classes)["auroc"].clone() if train_auroc else None
        self._compiled_forward: CompiledForward | None = None
        self._graphed_step: GraphedTrainStep[StepOutputs] | None = None
        self._graph_steps = False  # whether this fit replays full batches as a CUDA graph (set in on_fit_start)
        self._train_metrics: dict[str, float] = {}
        self._train_metrics_epoch: int | None = None
        self.val_metrics = classification_metrics(task, num_classes).clone(prefix="val/")
        self.test_metrics = classification_metrics(task, num_classes).clone(prefix="test/")

    # ----------------------------------------------------------------------------------------------- forward
    def normalize(self, images: Tensor) -> Tensor:
        """uint8 ``[B, C, H, W]`` -> normalised float ``[B, C', H, W]`` on the images' device."""
        x = images.float().div_(255)
        if self.repeat_channels > 1:
            x = x.expand(-1, self.repeat_channels, -1, -1)
        return (x - self.pixel_mean) / self.pixel_std

    def forward_features(self, images: Tensor) -> BackboneOutputs:
        """Logits ``[B, K]``, the embedding T_f(u) ``[B, embedding_dim]`` and the four block outputs."""
        dropout = self.hparams.dropout if self.training else 0.0
        return resnet_forward(self.net, self.normalize(images), dropout)

    @property
    def embedding_dim(self) -> int:
        """Dimensions of the embedding T_f(u): 512 for ResNet-18, ``8 * width`` in general."""
        return self.net.fc.in_features

    def classify(self, embedding: Tensor) -> Tensor:
        """Logits ``[..., K]`` of embeddings ``[..., embedding_dim]``: the final linear layer alone."""
        return self.net.fc(embedding)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``[B, K]`` of uint8 images ``[B, C, H, W]``."""
        return self.forward_features(images).logits

    def vae_features(self, images: Tensor) -> Tensor | None:
        """``alpha * V(u)`` ``[B, latent]``, or ``None`` without a VAE."""
        return self.vae.weighted(images) if self.vae is not None else None

    def predict_loss(self, images: Tensor, outputs: BackboneOutputs | None = None) -> Tensor:
        """The loss-prediction head's estimate of each image's loss, ``[B]``."""
        if self.loss_head is None:
            raise RuntimeError("this task model has no loss-prediction head: set model.loss_prediction true")
        outputs = self.forward_features(images) if outputs is None else outputs
        return self.loss_head(outputs.blocks, self.vae_features(images))

    def per_sample_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``[B]``: cross-entropy, or for multi-label the mean binary cross-entropy over findings."""
        if self.task == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none").mean(dim=1)
        return F.cross_entropy(logits, targets, reduction="none")

    # ------------------------------------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        """Set up the graphed step, or compile the training forward pass, for this fit's device and batch size."""
        batch_size = getattr(self.trainer.datamodule, "batch_size", None)
        if not self.automatic_optimization:  # cuda_graph chosen (explicitly or by default)
            reason = self._cuda_graph_unsupported_reason(self.trainer)
            self._graph_steps = reason is None
            if reason is not None:
                warnings.warn(f"model.cuda_graph is on but {reason}: training steps run eagerly", stacklevel=2)
            return
        compile_ = self.hparams.compile if self.hparams.compile is not None else self.device.type == "cuda"
        if compile_ and batch_size is not None and self._compiled_forward is None:
            self._compiled_forward = CompiledForward(
                self.train_forward, batch_size, self.hparams.compile_mode, self.hparams.compile_backend
            )

    @property
    def automatic_optimization(self) -> bool:
        """Lightning's automatic optimisation, unless the step runs as a CUDA graph (``cuda_graph``)."""
        if self.hparams.cuda_graph is not None:
            return not self.hparams.cuda_graph
        return self._trainer is None or self._cuda_graph_unsupported_reason(self._trainer) is not None

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        raise AttributeError("TaskModel chooses its optimisation from model.cuda_graph; set that instead")

    def _cuda_graph_unsupported_reason(self, trainer: L.Trainer) -> str | None:
        """Why this trainer's training step cannot run as one CUDA graph, or ``None`` when it can."""
        if trainer.strategy.root_device.type != "cuda":
            return "training does not run on a CUDA GPU"
        return trainer_settings_conflict(trainer)

    def _new_step_graph(self) -> StepGraph:
        """The graph a ``GraphedTrainStep`` records into (a CUDA graph; tests substitute a stand-in)."""
        return CudaStepGraph()

    def on_train_epoch_start(self) -> None:
        self.epoch_train_metrics.reset()
        self._train_metrics_epoch = None
        if self.train_auroc is not None:
            self.train_auroc.reset()

    def on_train_batch_start(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        if self.hparams.dropout > 0 and batch_idx == 0:
            # Dropout draws from the global RNG. Seeding it from (init_seed, epoch, rank) makes each epoch draw the same
            # masks whether or not the run was resumed in between. Not at the epoch's start: creating the epoch's
            # DataLoader iterator draws from the global RNG too, at a point that differs after a resume. CUDA graph
            # replays and compiled code read the generator when they run, so they follow.
            index = self.current_epoch * self.trainer.world_size + self.global_rank + 1
            torch.manual_seed(derive_seed(self.hparams.init_seed, DROPOUT_STREAM, index))

    def train_forward(self, images: Tensor, targets: Tensor) -> tuple[BackboneOutputs, Tensor, Tensor]:
        """What a training step computes before any head: the forward pass, per-image losses ``[B]`` and the
        batch's correct predictions (0-d int64). One pure function, so that it compiles into one graph."""
        outputs = self.forward_features(images)
        losses = self.per_sample_loss(outputs.logits, targets)
        return outputs, losses, EpochTrainMetrics.correct_predictions(outputs.logits.detach(), targets)

    def compute_step(
        self,
        images: Tensor,
        targets: Tensor,
        forward: Callable[..., tuple[BackboneOutputs, Tensor, Tensor]] | None = None,
    ) -> StepOutputs:
        """A training step's losses and correct predictions for a batch, before backward.

        Args:
            images: uint8 ``[B, C, H, W]``.
            targets: int64 ``[B]`` classes or ``[B, K]`` 0/1 findings.
            forward: ``train_forward`` or its compiled version (default: ``train_forward``).
        """
        outputs, losses, correct = (forward or self.train_forward)(images, targets)
        task_loss = losses.mean()
        loss, margin_loss = task_loss, None
        if self.loss_head is not None:
            blocks = tuple(b.detach() for b in outputs.blocks) if self._detach_loss_head else outputs.blocks
            predicted = self.loss_head(blocks, self.vae_features(images))
            margin_loss = pairwise_margin_loss(predicted, losses.detach(), self.hparams.loss_margin)
            loss = task_loss + self.hparams.loss_prediction_weight * margin_loss
        return StepOutputs(loss, task_loss, margin_loss, correct, outputs.logits.detach())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        images, targets = batch
        if self.automatic_optimization:
            self.clear_gradients_before_forward()
            outputs = self.compute_step(images, targets, self.step_forward)
        else:
            outputs = self._manual_step(images, targets)
        # Device-side sums only: nothing in a step waits for the GPU.
        self.epoch_train_metrics.update(outputs.task_loss, outputs.correct, targets, outputs.margin_loss)
        if self.train_auroc is not None:
            self.train_auroc.update(scores(outputs.logits, self.task), targets)
        return outputs.loss if self.automatic_optimization else None

    def _manual_step(self, images: Tensor, targets: Tensor) -> StepOutputs:
        """One optimisation step: replayed as a CUDA graph for full batches, eager otherwise."""
        optimizer = self.optimizers()
        if self._graph_steps and self._graphed_step is None:
            # Full batches are the DataModule's batch size (or, without one, the first batch's).
            batch_size = getattr(self.trainer.datamodule, "batch_size", None) or len(images)
            self._graphed_step = GraphedTrainStep(self.compute_step, batch_size, self._new_step_graph)
            rank_zero_info(f"Training steps of {batch_size} images run as one CUDA graph (model.cuda_graph)")
        graphed = self._graphed_step if self._graph_steps else None
        if graphed is not None and graphed.handles(images):
            result: list[StepOutputs] = []
            # Lightning's optimizer.step counts the step; the graph has already applied it and cleared the
            # gradients, so the SGD step it calls after the closure changes nothing.
            optimizer.step(
                closure=lambda: result.append(
                    graphed.run(optimizer.optimizer, images, targets, settings=self._detach_loss_head)
                )
            )
            return result[0]
        optimizer.zero_grad(set_to_none=True)
        outputs = self.compute_step(images, targets)
        self.manual_backward(outputs.loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return outputs

    def train_epoch_metrics(self) -> dict[str, float]:
        """The finished epoch's ``train/loss``, ``train/accuracy`` (and ``train/loss_prediction``), over all ranks.

        A collective under DDP: every rank calls it (the active-learning loop does, at every epoch's end).
        Computed once per epoch; later calls return the same numbers.
        """
        epoch = self.trainer.current_epoch
        if self._train_metrics_epoch != epoch:
            reduce_sum = lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")  # noqa: E731
            values = self.epoch_train_metrics.compute(reduce_sum)
            if self.train_auroc is not None and values:
                values["auroc"] = self.train_auroc.compute()
            self._train_metrics = {f"train/{name}": float(value) for name, value in values.items()}
            self._train_metrics_epoch = epoch
        return self._train_metrics

    def on_train_epoch_end(self) -> None:
        """Publish the epoch's train metrics where ``self.log(on_epoch=True, prog_bar=True)`` would put them: the
        loggers (at the epoch's last step, with ``epoch``), ``trainer.callback_metrics`` (read by checkpoint and
        early-stopping callbacks, which run after this hook) and the progress bar.

        Not through ``self.log``: each logged value costs Lightning ~1.5 ms of host time (it moves a torchmetrics
        state holder to the value's device on every call), which at a few dozen steps per epoch is more than the
        rest of what this project adds to a step. The values are already reduced over ranks, and loggers write
        from rank zero only.
        """
        metrics = self.train_epoch_metrics()
        if not metrics:
            return
        self.trainer.callback_metrics.update({name: torch.tensor(value) for name, value in metrics.items()})
        self.trainer.progress_bar_metrics.update(metrics)
        for logger in self.loggers:
            logger.log_metrics({**metrics, "epoch": self.current_epoch}, step=max(self.global_step - 1, 0))

    def _evaluation_step(self, batch: tuple[Tensor, Tensor], metrics: nn.Module, stage: str) -> None:
        images, targets = batch
        logits = self(images)
        metrics.update(scores(logits, self.task), targets)
        self.log(f"{stage}/loss", self.per_sample_loss(logits, targets).mean(), on_epoch=True, sync_dist=True)
        self.log_dict(metrics, on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, self.test_metrics, "test")

    def step_forward(self, images: Tensor, targets: Tensor) -> tuple[BackboneOutputs, Tensor, Tensor]:
        """``train_forward``, compiled when ``on_fit_start`` compiled it."""
        forward = self._compiled_forward if self._compiled_forward is not None else self.train_forward
        return forward(images, targets)

    def clear_gradients_before_forward(self) -> None:
        """Clear gradients before the forward pass, as a plain PyTorch loop does (Lightning clears them between
        forward and backward): a step replayed as CUDA graphs then never runs while the previous step's
        gradients, which may live in the graphs' memory pool, are still alive."""
        if self._clears_gradients_itself():
            for optimizer in self.trainer.optimizers:
                optimizer.zero_grad(set_to_none=True)

    def _clears_gradients_itself(self) -> bool:
        return self._trainer is not None and self.trainer.accumulate_grad_batches == 1

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        """Lightning's zeroing, unless ``training_step`` already cleared the gradients before its forward pass."""
        if not self._clears_gradients_itself():
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            # Not the VAE features': a label-aware VAE trains with its own optimizer, between rounds.
            (p for name, p in self.named_parameters() if p.requires_grad and not name.startswith("vae.")),
            lr=self.hparams.lr,
            momentum=self.hparams.momentum,
            weight_decay=self.hparams.weight_decay,
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse, in one line, a checkpoint written by another model or configuration."""
        state = checkpoint.get("state_dict", {})
        own = self.state_dict()
        missing = [name for name in own if name not in state]
        misshaped = [name for name in own if name in state and state[name].shape != own[name].shape]
        if missing or misshaped:
            example = (missing + misshaped)[0]
            raise ValueError(
                f"the checkpoint does not fit this model ({len(missing)} tensors missing, {len(misshaped)} of another "
                f"shape, e.g. {example}): resume with the configuration that wrote it"
            )

    # -------------------------------------------------------------------------------------------- rounds
    def _trainable_state(self) -> dict[str, Tensor]:
        state = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        if self.loss_head is not None:
            state.update({f"loss_head.{k}": v for k, v in self.loss_head.state_dict().items()})
        return state

    def reset_to_initial_weights(self) -> None:
        """Copy the round-0 weights back in place (the DDP wrapper keeps pointing at the same tensors)."""
        with torch.no_grad():
            current = self._trainable_state()
            for name, value in self._initial_state.items():
                current[name].copy_(value)

    def recompute_batch_norm(self, batches: Iterable[Tensor]) -> None:
        """Replace the ResNet's batch-norm running statistics by their average over ``batches`` (uint8
        ``[B, C, H, W]`` each), one pass in train mode without gradients (``torch.optim.swa_utils.update_bn``).
        The loss head has no batch norm; the frozen VAE keeps its own statistics."""
        update_bn((self.normalize(images) for images in batches), self.net)

    def set_round_progress(self, epoch_in_round: int, round_epochs: int) -> None:
        """Told by the active-learning loop at each epoch start; stops the loss head's backbone gradient."""
        self._detach_loss_head = epoch_in_round >= self.hparams.loss_detach_after * round_epochs
