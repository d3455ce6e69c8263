"""Training the variational autoencoder whose frozen encoder gives the task-agnostic features V(u) (paper, eq. 6).

Trained once per data set on the whole pool, without labels (``python train.py fit --config
configs/vae_<data>.yaml``); an active-learning run then loads its network with :func:`load_vae_encoder`. The network
itself is :class:`~alvae_pl.models.vae_network.VAENetwork`, the objective :mod:`alvae_pl.models.vae_loss`.
"""

from __future__ import annotations

from typing import Any

import lightning
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchvision.utils import make_grid

from alvae_pl.models.checkpoint_file import EncoderCheckpointFile
from alvae_pl.models.latent_prior import MixturePrior, PriorKind
from alvae_pl.models.optimizer_settings import check_optimizer_settings
from alvae_pl.models.vae_loss import vae_loss
from alvae_pl.models.vae_network import VAENetwork

#: How many images the reconstruction grid shows.
GRID_IMAGES = 8
#: Where the network's weights live in this module's ``state_dict`` (``network.encoder.0.0.weight``...).
NETWORK_PREFIX = "network."


class VAE(lightning.LightningModule):
    """Trains a :class:`~alvae_pl.models.vae_network.VAENetwork` (1 or 3 channels, 16 to 512 pixels a side) with Adam
    on the negative ELBO, and logs a reconstruction grid to TensorBoard.

    The reconstruction term is the Bernoulli log-likelihood (binary cross-entropy on pixel intensities in
    [0, 1]), summed over pixels: it is the ``log p(x|z)`` of eq. 5 and so is on the same nats-per-image scale as
    the KL term. A summed MSE would be a Gaussian likelihood with a fixed variance that is arbitrary for
    [0, 1] pixels, and a mean MSE would be dwarfed by the KL, which pushes the posterior to the prior and
    leaves V(u) uninformative.

    Args:
        num_channels: image channels (1 grayscale, 3 RGB).
        image_size: image height and width in pixels.
        latent_dim: size of the latent code, i.e. of V(u).
        lr: Adam learning rate (paper: 0.001).
        weight_decay: Adam weight decay (paper: 0.005).
        kl_weight: weight of the KL term (1 is the plain ELBO; a beta-VAE above 1).
        prior: ``gaussian``, the paper's N(0, I) (KL in closed form), or ``mixture``, a learnable mixture of
            ``components`` Gaussians (``MixturePrior``: the multimodal prior of the paper's future work; KL from the
            exact posterior entropy and a one-sample estimate of the cross-entropy). The prior's parameters train
            with the rest, without weight decay (which would pull the components together). V(u) stays the
            posterior mean either way.
        components: the mixture's number of Gaussians (with ``prior: mixture``; e.g. the number of classes).
    """

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int = 28,
        latent_dim: int = 32,
        lr: float = 1e-3,
        weight_decay: float = 5e-3,
        kl_weight: float = 1.0,
        prior: PriorKind = "gaussian",
        components: int = 10,
    ) -> None:
        super().__init__()
        check_optimizer_settings(lr, weight_decay)
        self.network = VAENetwork(num_channels, image_size, latent_dim, prior, components)
        self.save_hyperparameters()
        self.lr = lr
        self.weight_decay = weight_decay
        self.kl_weight = kl_weight
        # First batch of the current epoch (first validation batch, or first train batch when there is no
        # validation), for the reconstruction grid.
        self._grid_batch: Tensor | None = None

    # ------------------------------------------------------------------ the network's shape and use

    @property
    def num_channels(self) -> int:
        return self.network.num_channels

    @property
    def image_size(self) -> int:
        return self.network.image_size

    @property
    def latent_dim(self) -> int:
        return self.network.latent_dim

    @property
    def encoded_shape(self) -> tuple[int, int, int]:
        return self.network.encoded_shape

    @property
    def prior(self) -> MixturePrior | None:
        return self.network.prior

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, logvar)``, each float ``[B, latent_dim]``, of uint8 images ``[B, C, H, W]``."""
        return self.network.encode(images)

    def encode_mean(self, images: Tensor) -> Tensor:
        """V(u), the posterior mean: float ``[B, latent_dim]`` of uint8 images ``[B, C, H, W]``."""
        return self.network.encode_mean(images)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(reconstruction [B, C, H, W] in [0, 1], mean, logvar)`` of uint8 images (see ``VAENetwork.forward``)."""
        return self.network(images)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before the network was a module of its own keep its weights at the top level."""
        checkpoint["state_dict"] = network_state(checkpoint.get("state_dict", {}), prefixed=True)

    # ------------------------------------------------------------------ training

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images = batch[0]
        x, logits, mean, logvar, z = self.network.reconstruct(images)
        losses = vae_loss(logits, x, mean, logvar, self.kl_weight, kl=self.network.kl(mean, logvar, z))
        on_step = stage == "train"
        for name, value in losses.items():
            self.log(
                f"{stage}/{name}",
                value,
                on_step=on_step,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=images.shape[0],
                sync_dist=not on_step,
            )
        return losses["loss"]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """``batch = (uint8 [B, C, H, W], targets)``; targets are ignored."""
        if batch_idx == 0:
            self._keep_for_grid(batch[0], for_stage="train")
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """``batch = (uint8 [B, C, H, W], targets)``; targets are ignored. Reconstructs from the posterior mean."""
        if batch_idx == 0 and dataloader_idx == 0:
            self._keep_for_grid(batch[0], for_stage="val")
        return self._shared_step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        prior = list(self.prior.parameters()) if self.prior is not None else []
        networks = [p for name, p in self.network.named_parameters() if not name.startswith("prior.")]
        groups = [{"params": networks}] + ([{"params": prior, "weight_decay": 0.0}] if prior else [])
        return torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ reconstruction grid

    def _grid_wanted(self) -> bool:
        trainer = self.trainer
        return trainer.is_global_zero and not trainer.sanity_checking and isinstance(trainer.logger, TensorBoardLogger)

    def _keep_for_grid(self, images: Tensor, for_stage: str) -> None:
        # The grid comes from validation images when there are any: keep train images only without validation.
        if not self._grid_wanted() or (for_stage == "train" and self.trainer.enable_validation):
            return
        self._grid_batch = images[:GRID_IMAGES].detach()

    def _log_grid(self) -> None:
        if self._grid_batch is None or not self._grid_wanted():
            return
        images, self._grid_batch = self._grid_batch, None
        was_training = self.training
        self.eval()
        with torch.no_grad():
            reconstruction = self(images)[0]
        self.train(was_training)
        # Inputs on the first row, their reconstructions below them.
        grid = make_grid(torch.cat([images.float() / 255, reconstruction.float()]), nrow=len(images), pad_value=1.0)
        self.trainer.logger.experiment.add_image("vae/reconstructions", grid.cpu(), global_step=self.current_epoch)

    def on_validation_epoch_end(self) -> None:
        self._log_grid()

    def on_train_epoch_end(self) -> None:
        self._log_grid()


def network_state(state: dict[str, Tensor], prefixed: bool) -> dict[str, Tensor]:
    """A VAE checkpoint's ``state_dict`` with the network's keys under :data:`NETWORK_PREFIX` (``prefixed``, as
    :class:`VAE` holds them) or without it (as :class:`VAENetwork` does), whichever way the file has them."""
    legacy = not any(key.startswith(NETWORK_PREFIX) for key in state)
    if prefixed:
        return {f"{NETWORK_PREFIX}{key}": value for key, value in state.items()} if legacy else state
    return state if legacy else {key.removeprefix(NETWORK_PREFIX): value for key, value in state.items()}


def load_vae_encoder(path: str, num_channels: int, image_size: int, device: torch.device | str = "cpu") -> VAENetwork:
    """Load a trained VAE's network, frozen and in eval mode, after checking it fits the data.

    Args:
        path: a checkpoint written by ``python train.py fit --config configs/vae_<data>.yaml``.
        num_channels: the data's image channels.
        image_size: the data's image height and width.
        device: where to put the network.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a VAE checkpoint, or it was trained on images of another shape.
    """
    file = EncoderCheckpointFile(path, "VAE", "`python train.py fit --config configs/vae_<data>.yaml`")
    hparams, state = file.read()
    if any(key not in hparams for key in ("num_channels", "image_size", "latent_dim")):
        raise ValueError(file.not_ours)
    state = network_state(state, prefixed=False)
    if not any(key.startswith("to_mean.") for key in state):
        raise ValueError(file.not_ours)
    file.check_images(hparams, num_channels, image_size)
    network = VAENetwork(
        num_channels,
        image_size,
        int(hparams["latent_dim"]),
        prior=hparams.get("prior", "gaussian"),
        components=int(hparams.get("components", 10)),
    )
    try:
        network.load_state_dict(state)
    except RuntimeError as error:  # state_dict keys or shapes that do not match the hyper-parameters
        raise ValueError(f"{file.not_ours} ({str(error).splitlines()[0]})") from error
    network.eval()
    network.requires_grad_(False)
    return network.to(device)
