"""The ResNet-18 task model: its metrics, its weights, and what it hands to the heuristics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from medmnist.evaluator import getACC, getAUC
from torchvision.models import resnet18

from alvae_pl.models.backbone import imagenet_weights_path
from alvae_pl.models.metrics import compute_metrics
from alvae_pl.models.task_model import TaskModel
from alvae_pl.models.vae_features import VAEFeatures


def test_multilabel_metrics_equal_medmnist_evaluator() -> None:
    generator = torch.Generator().manual_seed(0)
    targets = (torch.rand(200, 14, generator=generator) < 0.2).long()
    logits = torch.randn(200, 14, generator=generator) + 1.5 * targets  # informative, not perfect
    ours = compute_metrics(logits, targets, "multilabel", 14)
    probabilities = logits.sigmoid().numpy()
    assert ours["accuracy"] == pytest.approx(getACC(targets.numpy(), probabilities, "multi-label, binary-class"))
    assert ours["auroc"] == pytest.approx(getAUC(targets.numpy(), probabilities, "multi-label, binary-class"), abs=1e-6)


def test_multiclass_metrics_equal_medmnist_evaluator() -> None:
    generator = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 9, (300,), generator=generator)
    logits = torch.randn(300, 9, generator=generator)
    logits[torch.arange(300), targets] += 1.0
    ours = compute_metrics(logits, targets, "multiclass", 9)
    probabilities = logits.softmax(1).numpy()
    assert ours["accuracy"] == pytest.approx(getACC(targets.numpy(), probabilities, "multi-class"))
    assert ours["auroc"] == pytest.approx(getAUC(targets.numpy(), probabilities, "multi-class"), abs=1e-6)


@pytest.mark.parametrize(("channels", "size", "stem", "spatial"), [(1, 28, "imagenet", 7), (3, 64, "small", 64)])
def test_features_have_the_documented_shapes(channels: int, size: int, stem: str, spatial: int) -> None:
    model = TaskModel(num_classes=5, num_channels=channels, image_size=size, stem=stem).eval()
    images = torch.randint(0, 256, (2, channels, size, size), dtype=torch.uint8)
    outputs = model.forward_features(images)
    assert outputs.logits.shape == (2, 5) and outputs.embedding.shape == (2, 512)
    assert [tuple(b.shape[1:3]) for b in outputs.blocks] == [
        (64, spatial),
        (128, -(-spatial // 2)),
        (256, -(-spatial // 4)),
        (512, -(-spatial // 8)),
    ]


def test_round_zero_weights_come_back_and_depend_only_on_the_seed() -> None:
    model = TaskModel(num_classes=3, num_channels=1, init_seed=5)
    twin = TaskModel(num_classes=3, num_channels=1, init_seed=5)
    other = TaskModel(num_classes=3, num_channels=1, init_seed=6)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(first[k], v) for k, v in twin.state_dict().items())
    assert not torch.equal(first["net.fc.weight"], other.state_dict()["net.fc.weight"])
    optimizer = model.configure_optimizers()
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    model.training_step((images, torch.randint(0, 3, (8,))), 0).backward()
    optimizer.step()
    assert not torch.equal(first["net.fc.weight"], model.state_dict()["net.fc.weight"])
    assert not torch.equal(first["net.bn1.running_mean"], model.state_dict()["net.bn1.running_mean"])
    model.reset_to_initial_weights()
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())


def test_imagenet_weights_offline_say_where_to_put_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = imagenet_weights_path()
    assert expected == os.path.join(str(tmp_path), "hub", "checkpoints", "resnet18-f37072fd.pth")

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth") as error:
        TaskModel(num_classes=14, num_channels=1, weights="IMAGENET1K_V1")
    assert "--model.weights null" in str(error.value) and "\n" not in str(error.value)


def test_imagenet_weights_load_from_the_cache_and_grayscale_is_repeated(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = resnet18()
    os.makedirs(os.path.dirname(imagenet_weights_path()))
    torch.save(reference.state_dict(), imagenet_weights_path())
    model = TaskModel(num_classes=14, num_channels=1, weights="IMAGENET1K_V1", task="multilabel").eval()
    assert torch.equal(model.net.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.net.fc.out_features == 14
    gray = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    normalized = model.normalize(gray)
    assert normalized.shape == (2, 3, 28, 28)
    # The same gray image, normalised with each ImageNet channel's statistics.
    assert torch.allclose(normalized[:, 0] * 0.229 + 0.485, normalized[:, 1] * 0.224 + 0.456, atol=1e-6)


def test_multilabel_loss_is_mean_binary_cross_entropy_over_findings() -> None:
    model = TaskModel(num_classes=2, num_channels=1, task="multilabel")
    logits = torch.tensor([[0.0, 2.0]])
    targets = torch.tensor([[1, 0]])
    expected = (torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(2.0)))) / 2
    assert model.per_sample_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_prediction_head_trains_the_backbone_only_early_in_a_round() -> None:
    model = TaskModel(num_classes=3, num_channels=1, loss_prediction=True, loss_detach_after=0.5)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    targets = torch.randint(0, 3, (8,))

    def backbone_gradient(epoch_in_round: int | None) -> torch.Tensor:
        model.zero_grad()
        if epoch_in_round is None:  # the task loss alone
            model.per_sample_loss(model(images), targets).mean().backward()
        else:
            model.set_round_progress(epoch_in_round, round_epochs=10)
            model.training_step((images, targets), 0).backward()
        return model.net.layer1[0].conv1.weight.grad.clone()

    task_only = backbone_gradient(None)
    assert not torch.allclose(backbone_gradient(4), task_only)
    assert torch.allclose(backbone_gradient(5), task_only)
    assert model.predict_loss(images).shape == (8,)


def test_recomputed_batch_norm_statistics_are_those_of_the_given_images_and_spare_the_vae(tmp_path: Path) -> None:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from alvae_pl.models.vae import VAE

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 1, 28, 28), dtype=torch.uint8, generator=generator)
    vae_trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    vae_trainer.fit(VAE(), DataLoader(TensorDataset(images, torch.zeros(12)), batch_size=12))
    vae_trainer.save_checkpoint(tmp_path / "vae.ckpt")
    vae = VAEFeatures(str(tmp_path / "vae.ckpt"))
    model = TaskModel(num_classes=3, num_channels=1, loss_prediction=True, vae=vae)
    model.eval()
    vae_state = {name: value.clone() for name, value in model.vae.state_dict().items()}

    model.recompute_batch_norm([images[:6], images[6:]])

    # The first batch norm sees conv1's output; its running mean is the average of the two batches' means.
    with torch.no_grad():
        first = model.net.conv1(model.normalize(images))
    expected = (first[:6].mean(dim=(0, 2, 3)) + first[6:].mean(dim=(0, 2, 3))) / 2
    torch.testing.assert_close(model.net.bn1.running_mean, expected, rtol=1e-4, atol=1e-5)
    assert model.net.bn1.momentum == 0.1 and not model.training  # settings and mode are restored
    assert all(torch.equal(value, model.vae.state_dict()[name]) for name, value in vae_state.items())


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_auroc_leaves_out_a_class_without_positives_and_names_it(task: str) -> None:
    from sklearn.metrics import roc_auc_score

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(60, 4, generator=generator)
    if task == "multilabel":
        targets = (torch.rand(60, 4, generator=generator) > 0.5).long()
        targets[:, 2] = 0  # finding 2 never present
        probabilities = logits.sigmoid()
    else:
        targets = torch.tensor([0, 1, 3] * 20)  # class 2 never present
        probabilities = logits.softmax(dim=1)
    one_hot = targets if task == "multilabel" else torch.nn.functional.one_hot(targets, 4)
    expected = sum(roc_auc_score(one_hot[:, k], probabilities[:, k]) for k in (0, 1, 3)) / 3
    kind = "finding" if task == "multilabel" else "class"
    with pytest.warns(UserWarning, match=f"AUROC is undefined for {kind} 2 .* mean over the other 3"):
        auroc = compute_metrics(logits, targets, task, 4)["auroc"]
    assert auroc == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("stem", ["imagenet", "small"])
def test_a_narrow_backbone_keeps_the_interface_at_its_own_widths(stem: str) -> None:
    # The tests' profile (width 8): the same four stages and heads, every width read off the backbone.
    model = TaskModel(num_classes=5, num_channels=1, stem=stem, width=8, loss_prediction=True).eval()
    outputs = model.forward_features(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8))
    assert model.embedding_dim == 64 and outputs.embedding.shape == (2, 64) and outputs.logits.shape == (2, 5)
    assert [b.shape[1] for b in outputs.blocks] == [8, 16, 32, 64]
    assert model.predict_loss(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), outputs).shape == (2,)
    assert model.classify(outputs.embedding).shape == (2, 5)
    # Seeded like the real one: the same seed, the same round-0 weights.
    twin = TaskModel(num_classes=5, num_channels=1, stem=stem, width=8, loss_prediction=True)
    assert all(torch.equal(value, twin.state_dict()[name]) for name, value in model.state_dict().items())


def test_the_default_width_is_torchvisions_resnet18_and_pretrained_weights_need_it() -> None:
    torch.manual_seed(3)
    reference = resnet18(num_classes=4)
    reference.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model = TaskModel(num_classes=4, num_channels=1, init_seed=3)
    assert model.embedding_dim == 512
    assert all(torch.equal(value, model.net.state_dict()[name]) for name, value in reference.state_dict().items())
    with pytest.raises(ValueError, match="width 64 only"):
        TaskModel(num_classes=4, num_channels=1, width=8, weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="width=0"):
        TaskModel(num_classes=4, num_channels=1, width=0)
