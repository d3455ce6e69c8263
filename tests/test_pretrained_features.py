"""Pretrained encoders as task-agnostic features: built without weights (no network in tests), their shapes, grayscale,
the per-run cache, loading from torchvision's cache folder, and the one-line offline error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torchvision.models import ResNet18_Weights, resnet18

from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.models.pretrained_features import PretrainedFeatures, torchvision_weights_path
from tests.helpers.cli_runs import first_acquisition


@pytest.mark.parametrize(("model", "dim"), [("resnet18", 512), ("resnet50", 2048), ("vit_b_16", 768)])
def test_shapes_without_weights(model: str, dim: int) -> None:
    torch.manual_seed(0)
    features = PretrainedFeatures(model, weights=None, batch_size=2).load(1, 28)
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    embedded = features(images)
    assert features.feature_dim == dim and embedded.shape == (3, dim) and embedded.dtype == torch.float32
    assert features.input_size == 224  # vit_b_16 takes nothing else: the resize is what makes 28 px images fit


def test_grayscale_equals_its_three_channel_copy_and_rgb_works() -> None:
    torch.manual_seed(0)
    features = PretrainedFeatures("resnet18", weights=None, input_size=32).load(1, 28)
    gray = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.allclose(features(gray), features.encode(gray.expand(-1, 3, -1, -1).contiguous()), atol=1e-5)
    assert features(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)).shape == (2, 512)


def test_features_are_computed_once_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    features = PretrainedFeatures("resnet18", weights=None, input_size=32).load(1, 28)
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    first = features(images)
    embedded_rows: list[int] = []
    original = features._embed  # noqa: SLF001 - counting the network passes

    def counting(batch: torch.Tensor) -> torch.Tensor:
        embedded_rows.append(len(batch))
        return original(batch)

    monkeypatch.setattr(features, "_embed", counting)
    # Seen images come from the cache in any order; a new one, and a duplicate of it, cost one row.
    new = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8)
    again = features(torch.cat([images[[4, 0, 2]], new, new]))
    assert embedded_rows == [1]
    assert torch.equal(again[:3], first[[4, 0, 2]]) and torch.equal(again[3], again[4])


def test_feature_space_reads_it_like_the_vae() -> None:
    torch.manual_seed(0)
    features = PretrainedFeatures("resnet18", weights=None, input_size=32, normalize=True)
    space = FeatureSpace(features, task_weight=0)
    features.load(1, 28)
    outputs = space.embed(None, torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8))  # type: ignore[arg-type]
    points, labeled = space.combine({"vae": outputs["vae"][:4]}, {"vae": outputs["vae"][4:]})
    assert points.shape == (4, 512) and labeled.shape == (2, 512)


def test_weights_load_from_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = torchvision_weights_path(ResNet18_Weights.IMAGENET1K_V1.url)
    assert path == os.path.join(str(tmp_path), "hub", "checkpoints", "resnet18-f37072fd.pth")
    reference = resnet18()
    os.makedirs(os.path.dirname(path))
    torch.save(reference.state_dict(), path)
    features = PretrainedFeatures("resnet18", weights="IMAGENET1K_V1").load(1, 28)
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    reference.fc = torch.nn.Identity()
    x = torch.nn.functional.interpolate(images.float().div(255).expand(-1, 3, -1, -1), size=224, mode="bilinear",
                                        antialias=True)  # fmt: skip
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        expected = reference.eval()((x - mean) / std)
    assert torch.allclose(features(images), expected, atol=1e-4)


def test_missing_weights_offline_give_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError) as error:
        PretrainedFeatures("resnet18", weights="IMAGENET1K_V1").load(1, 28)
    message = str(error.value)
    assert "\n" not in message
    assert os.path.join(str(tmp_path), "hub", "checkpoints", "resnet18-f37072fd.pth") in message
    assert "TORCH_HOME" in message and "weights: null" in message


def test_unknown_models_and_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet19'"):
        PretrainedFeatures("resnet19", weights=None).load(1, 28)
    with pytest.raises(ValueError, match="no weights 'IMAGENET1K_V9': use one of IMAGENET1K_V1, DEFAULT or null"):
        PretrainedFeatures("resnet18", weights="IMAGENET1K_V9").load(1, 28)


def test_core_set_runs_on_the_pretrained_overlay(tmp_path: Path) -> None:
    # The shipped overlay, with random weights (no network in tests) and a small input for speed.
    _, picked = first_acquisition(
        tmp_path, "digits_coreset.yaml", "--config", "configs/vae_features/pretrained_resnet50.yaml",
        "--active.heuristic.init_args.features.vae.init_args.model=resnet18",
        "--active.heuristic.init_args.features.vae.init_args.weights=null",
        "--active.heuristic.init_args.features.vae.init_args.input_size=32",
    )  # fmt: skip
    assert len(picked) == 60 and picked == sorted(picked, reverse=True) and picked[-1] > 0


def test_moving_the_features_moves_the_network_but_checkpoints_leave_it_out() -> None:
    features = PretrainedFeatures("resnet18", weights=None, input_size=32).load(1, 28)
    features.to(torch.float64)
    assert next(features._net.parameters()).dtype == torch.float64  # noqa: SLF001 - the network outside the tree
    assert features.state_dict() == {}  # the task model's checkpoint does not carry 11 M frozen weights
