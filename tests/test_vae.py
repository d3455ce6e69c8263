"""The VAE: shapes for every supported image kind, the loss, that training on real digits learns, and loading."""

from __future__ import annotations

from pathlib import Path

import lightning
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from alvae_pl.models.latent_prior import kl_to_standard_normal
from alvae_pl.models.vae import VAE, load_vae_encoder
from alvae_pl.models.vae_loss import reconstruction_loss, vae_loss


def quiet_trainer(**kwargs: object) -> lightning.Trainer:
    return lightning.Trainer(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, **kwargs)


@pytest.fixture(scope="module")
def digits() -> tuple[Tensor, Tensor]:
    """1000 sklearn digits as uint8 ``[1000, 1, 28, 28]`` (0..16 scaled to 0..255, 8 -> 28 px) and labels."""
    data = load_digits()
    images = torch.tensor(data.images[:1000], dtype=torch.float32)[:, None] / 16
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    return (images * 255).round().clamp(0, 255).to(torch.uint8), torch.tensor(data.target[:1000])


@pytest.fixture(scope="module")
def trained(digits: tuple[Tensor, Tensor]) -> tuple[VAE, list[float], lightning.Trainer]:
    """A VAE trained 3 epochs on the digits (in eval mode), its train loss per epoch, and its trainer."""
    lightning.seed_everything(0, verbose=False)
    model = VAE(num_channels=1, image_size=28)
    epoch_losses: list[float] = []

    class RecordLoss(lightning.Callback):
        def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
            epoch_losses.append(float(trainer.callback_metrics["train/loss_epoch"]))

    trainer = quiet_trainer(max_epochs=3, logger=False, enable_checkpointing=False, callbacks=[RecordLoss()])
    trainer.fit(model, DataLoader(TensorDataset(*digits), batch_size=32, shuffle=True))
    return model.eval(), epoch_losses, trainer


@pytest.mark.parametrize(
    ("channels", "size", "encoded", "batch"),
    [(1, 28, (2, 2), 4), (3, 64, (4, 4), 4), (1, 32, (2, 2), 4), (3, 224, (14, 14), 1)],
)
def test_shapes_for_every_supported_image_kind(channels: int, size: int, encoded: tuple[int, int], batch: int) -> None:
    model = VAE(num_channels=channels, image_size=size, latent_dim=16).eval()
    images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8)
    assert model.encoded_shape == (256, *encoded)
    with torch.no_grad():
        reconstruction, mean, logvar = model(images)
        features = model.encode_mean(images)
    assert reconstruction.shape == images.shape
    assert reconstruction.min() >= 0 and reconstruction.max() <= 1
    assert mean.shape == logvar.shape == features.shape == (batch, 16)
    assert torch.equal(features, mean)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere() -> None:
    zeros = torch.zeros(3, 8)
    assert torch.equal(kl_to_standard_normal(zeros, zeros), torch.zeros(3))
    # One dimension with mean 1, variance 1: KL = 0.5 * (1 + 1 - 1 - 0) = 0.5 nats.
    mean = torch.zeros(1, 8)
    mean[0, 0] = 1.0
    assert torch.allclose(kl_to_standard_normal(mean, torch.zeros(1, 8)), torch.tensor([0.5]))


def test_loss_sums_over_pixels_averages_over_batch_and_weights_kl() -> None:
    target = torch.full((2, 1, 4, 4), 0.5)
    logits = torch.zeros(2, 1, 4, 4)  # p = 0.5 for every pixel: ln 2 nats each, 16 pixels an image
    assert torch.allclose(reconstruction_loss(logits, target), torch.full((2,), 16 * torch.log(torch.tensor(2.0))))
    mean, logvar = torch.ones(2, 3), torch.zeros(2, 3)  # KL = 3 * 0.5 per image
    losses = vae_loss(logits, target, mean, logvar, kl_weight=2.0)
    assert torch.isclose(losses["kl"], torch.tensor(1.5))
    assert torch.isclose(losses["loss"], losses["reconstruction"] + 2.0 * 1.5)


def test_training_on_digits_lowers_the_loss_and_beats_the_mean_image(
    trained: tuple[VAE, list[float], lightning.Trainer], digits: tuple[Tensor, Tensor]
) -> None:
    model, epoch_losses, _ = trained
    assert len(epoch_losses) == 3
    # Measured (seeds 0-2): last / first epoch 0.83-0.85. The floor is not 0: digits have gray pixels, whose
    # BCE against themselves is about 254 nats an image here.
    assert epoch_losses[-1] < 0.9 * epoch_losses[0], epoch_losses
    images = digits[0]
    x = images.float() / 255
    with torch.no_grad():
        reconstruction = model(images)[0]
    per_image = F.binary_cross_entropy(reconstruction, x, reduction="none").flatten(1).sum(1).mean()
    # Predicting the average digit for every image costs about 354 nats; the VAE, through its 32 numbers per
    # image, measured 298-307: the code carries what tells images apart.
    mean_image = x.mean(0, keepdim=True).clamp(1e-4, 1 - 1e-4).expand_as(x)
    baseline = F.binary_cross_entropy(mean_image, x, reduction="none").flatten(1).sum(1).mean()
    assert per_image < baseline - 25, (float(per_image), float(baseline))


def test_checkpoint_round_trip_gives_identical_features(
    trained: tuple[VAE, list[float], lightning.Trainer], digits: tuple[Tensor, Tensor], tmp_path: Path
) -> None:
    model, _, trainer = trained
    path = tmp_path / "vae.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_vae_encoder(str(path), num_channels=1, image_size=28)
    assert not loaded.training
    assert not any(parameter.requires_grad for parameter in loaded.parameters())
    images = digits[0][:64]
    with torch.no_grad():
        assert torch.equal(loaded.encode_mean(images), model.encode_mean(images))


def test_checkpoint_of_an_earlier_release_loads_to_the_same_features(
    trained: tuple[VAE, list[float], lightning.Trainer], digits: tuple[Tensor, Tensor], tmp_path: Path
) -> None:
    """Before the network was a module of its own, a VAE checkpoint kept its weights at the top level
    (``encoder.0.0.weight``): such a file still loads, for the features and to continue training."""
    model, _, trainer = trained
    path = tmp_path / "vae.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert all(key.startswith("network.") for key in checkpoint["state_dict"])
    checkpoint["state_dict"] = {key.removeprefix("network."): value for key, value in checkpoint["state_dict"].items()}
    legacy = tmp_path / "legacy.ckpt"
    torch.save(checkpoint, legacy)
    images = digits[0][:64]
    with torch.no_grad():
        expected = model.encode_mean(images)
        assert torch.equal(load_vae_encoder(str(legacy), num_channels=1, image_size=28).encode_mean(images), expected)
        assert torch.equal(VAE.load_from_checkpoint(legacy, weights_only=True).eval().encode_mean(images), expected)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step 1-channel 28 px VAE checkpoint."""
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    trainer = quiet_trainer(max_steps=1, logger=False, enable_checkpointing=False)
    trainer.fit(VAE(), DataLoader(TensorDataset(images, torch.zeros(8)), batch_size=8))
    path = tmp_path_factory.mktemp("vae") / "vae.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize(("channels", "size"), [(3, 28), (1, 64)])
def test_checkpoint_for_other_images_is_refused(small_checkpoint: Path, channels: int, size: int) -> None:
    with pytest.raises(ValueError, match=rf"trained on 1-channel 28x28 .* data has {channels}-channel {size}x{size}"):
        load_vae_encoder(str(small_checkpoint), num_channels=channels, image_size=size)


def test_missing_checkpoint_says_how_to_train_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train\.py fit --config configs/vae_"):
        load_vae_encoder(str(tmp_path / "absent.ckpt"), num_channels=1, image_size=28)


class NotAVAE(lightning.LightningModule):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 1)


def test_other_files_are_not_taken_for_a_vae(tmp_path: Path) -> None:
    other_module = tmp_path / "task.ckpt"
    torch.save({"state_dict": NotAVAE().state_dict(), "hyper_parameters": {"width": 4}}, other_module)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    for path in (other_module, text):
        with pytest.raises(ValueError, match="is not a VAE checkpoint"):
            load_vae_encoder(str(path), num_channels=1, image_size=28)


def test_wrong_images_get_a_clear_error() -> None:
    model = VAE(num_channels=1, image_size=28)
    with pytest.raises(ValueError, match="uint8"):
        model.encode_mean(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"built for images \[B, 1, 28, 28\]"):
        model.encode_mean(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))


def event_images(log_dir: Path) -> list[tuple[int, int, int]]:
    """(step, height, width) of every ``vae/reconstructions`` image TensorBoard recorded under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = []
    for events in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        if "vae/reconstructions" in accumulator.Tags()["images"]:
            found += [(e.step, e.height, e.width) for e in accumulator.Images("vae/reconstructions")]
    return sorted(found)


@pytest.mark.parametrize("with_validation", [True, False])
def test_reconstruction_grid_is_logged_every_epoch(tmp_path: Path, with_validation: bool) -> None:
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    loader = DataLoader(TensorDataset(images, torch.zeros(40)), batch_size=20)
    trainer = quiet_trainer(
        max_epochs=2, logger=TensorBoardLogger(tmp_path, name="vae"), enable_checkpointing=False, log_every_n_steps=1
    )
    trainer.fit(VAE(), loader, loader if with_validation else None)
    # 8 inputs over 8 reconstructions, 2 px padding: 2 * 30 + 2 high, 8 * 30 + 2 wide; none from the sanity check.
    assert event_images(tmp_path) == [(0, 62, 242), (1, 62, 242)]
