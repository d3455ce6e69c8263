"""The label-aware VAE (M2): its objective, what its features know, and its retraining inside the loop."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, TensorDataset

from alvae_pl.data.sources import DigitsSource
from alvae_pl.models.class_knowledge import measure
from alvae_pl.models.label_aware_features import LabelAwareVAEFeatures
from alvae_pl.models.label_aware_vae import LabelAwareVAE
from alvae_pl.models.vae import VAE
from tests.helpers.cli_runs import TWO_ROUNDS, kill_switch_config, read_csv, train, without_timings

LABEL_AWARE = (
    '{"class_path": "alvae_pl.models.label_aware_features.LabelAwareVAEFeatures", '
    '"init_args": {"epochs_per_round": 1, "marginalize": "mean_field"}}'
)


def _images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_exact_marginal_sums_per_class_elbos_under_the_classifier_minus_its_entropy(monkeypatch) -> None:
    torch.manual_seed(0)
    model = LabelAwareVAE(1, 28, num_classes=4, task="multiclass").eval()
    # No reparameterisation noise (z = mean), so that the batched and the per-class evaluations see the same z.
    monkeypatch.setattr(torch, "randn", lambda *shape, **options: torch.zeros(*shape, device=options.get("device")))
    with torch.no_grad():
        x, hidden = model._hidden(_images(3))
        marginal = model._marginal_negative_elbo(x, hidden, None)
        belief = model.label_probabilities(hidden)
        per_class = torch.stack(
            [model._negative_elbo(x, hidden, F.one_hot(torch.full((3,), k), 4).float(), None) for k in range(4)], dim=1
        )
        expected = (belief * per_class).sum(1) + (belief * belief.log()).sum(1)
    torch.testing.assert_close(marginal, expected, rtol=1e-5, atol=1e-4)


def test_the_loss_reads_labels_only_where_they_are_known() -> None:
    torch.manual_seed(0)
    model = LabelAwareVAE(1, 28, num_classes=3, task="multiclass", marginalize="mean_field")
    images, labeled = _images(6), torch.tensor([True, True, False, False, True, False])
    targets = torch.tensor([0, 1, 2, 0, 1, 2])

    def loss(targets: torch.Tensor) -> float:
        return float(model.loss(images, targets, labeled, torch.Generator().manual_seed(1))["loss"])

    hidden_changed = targets.clone()
    hidden_changed[~labeled] = torch.tensor([1, 1, 0])
    assert loss(hidden_changed) == loss(targets)
    known_changed = targets.clone()
    known_changed[0] = 2
    assert loss(known_changed) != loss(targets)


def test_multilabel_and_mean_field_losses_and_features_have_their_shapes() -> None:
    torch.manual_seed(0)
    findings = LabelAwareVAE(1, 28, num_classes=5, task="multilabel", marginalize="exact")
    assert findings.marginalize == "mean_field"  # 2^K label vectors are never summed
    targets = torch.randint(0, 2, (4, 5))
    losses = findings.loss(_images(4), targets, torch.tensor([True, False, True, False]), torch.Generator())
    assert all(torch.isfinite(value) for value in losses.values()) and losses["classifier"] > 0
    features = findings.eval().features(_images(4))
    belief = features[:, 32:] / 32**0.5  # the finding probabilities, scaled to the latent mean's typical length
    assert features.shape == (4, 32 + 5) and ((belief >= 0) & (belief <= 1)).all()


@pytest.mark.slow
def test_label_aware_features_know_more_classes_than_the_plain_vaes_after_the_same_training() -> None:
    data = DigitsSource().load()
    train_images, train_targets = data.train.images, data.train.targets
    labeled = torch.zeros(len(train_images), dtype=torch.bool)
    labeled[torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))[:100]] = True
    epochs = 3

    features = LabelAwareVAEFeatures(epochs_per_round=epochs, marginalize="mean_field")
    features.load(1, 28, num_classes=10, task="multiclass")
    features.fit_round(train_images, train_targets, labeled, torch.Generator().manual_seed(0))

    torch.manual_seed(0)
    plain = VAE(num_channels=1, image_size=28)
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", **quiet)
    trainer.fit(plain, DataLoader(TensorDataset(train_images, train_targets), batch_size=64, shuffle=True))
    plain.eval()

    test = data.test
    with torch.no_grad():
        aware = measure("label-aware", features(test.images).numpy(), test.targets.numpy(), seed=0)
        blind = measure("plain", plain.encode_mean(test.images).numpy(), test.targets.numpy(), seed=0)
    # 100 labels of 1,257 train images: the classifier's belief carries what the labels teach about the classes.
    assert aware.knn_accuracy > blind.knn_accuracy + 0.01, (aware, blind)


@pytest.mark.slow
def test_label_aware_vaes_retrain_every_round_feed_core_set_and_the_loss_head_and_resume_exactly(tmp_path: Path):
    # Core-set measures in [T_f(u), V(u)] of one label-aware VAE while the loss head reads another (the model's):
    # the loop retrains both at each round's start and checkpoints both.
    arguments = [
        "--active.heuristic=CoreSet",
        f"--active.heuristic.init_args.features.vae={LABEL_AWARE}",
        f"--model.init_args.vae={LABEL_AWARE}",
        "--data.pool_size=200",
        *TWO_ROUNDS,
    ]
    reference = tmp_path / "reference"
    finished = train("digits_lossnet.yaml", reference, *arguments)
    assert finished.returncode == 0, finished.stderr[-3000:]
    run = reference / "digits_lossnet" / "seed_0"
    history = read_csv(run / "history.csv")
    assert [row["labels"] for row in history] == ["60", "120"]
    assert all(float(row["vae_seconds"]) > 0 for row in history)  # retrained at each round's start
    # What its V(u) knows of the test split's 10 classes, measured after each retraining: well above chance (0.1).
    assert all(float(row["vae_knn_accuracy"]) > 0.3 and float(row["vae_kmeans_nmi"]) > 0.1 for row in history), history
    assert "Label-aware VAE: 1 epochs on 200 images (60 labeled)" in finished.stdout + finished.stderr
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    saved = checkpoint["callbacks"]["ActiveLearningLoop"]
    assert saved["vae_trained_round"] == 1 and [s["rounds_trained"] for s in saved["label_aware_vaes"]] == [2, 2]
    # The task model's loss head reads the very object the loop trained: its weights are the saved ones.
    weights = saved["label_aware_vaes"][1]["weights"]
    assert all(torch.equal(checkpoint["state_dict"][f"vae.encoder.{name}"], value) for name, value in weights.items())

    killed_folder = tmp_path / "killed"
    killed_folder.mkdir()
    switch = killed_folder / "kill.yaml"  # mid round one, after its VAE retraining: resumed from round zero's end
    switch.write_text(kill_switch_config("{at_step: 4}"))
    killed = train("digits_lossnet.yaml", killed_folder, *arguments, "--config", str(switch), "--ckpt_path=last")
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = train("digits_lossnet.yaml", killed_folder, *arguments, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    actual = killed_folder / "digits_lossnet" / "seed_0"
    assert read_csv(actual / "labeled.csv") == read_csv(run / "labeled.csv")
    assert without_timings(read_csv(actual / "history.csv")) == without_timings(read_csv(run / "history.csv"))
    assert json.loads((actual / "run_status.json").read_text())["status"] == "finished"


@pytest.mark.parametrize(
    ("config", "overlay", "path"),
    [
        ("digits_coreset.yaml", "label_aware.yaml", ("active", "heuristic", "init_args", "features", "init_args")),
        ("digits_lossnet.yaml", "label_aware_loss_head.yaml", ("model", "init_args")),
    ],
)
def test_the_overlays_put_the_label_aware_vae_where_eq_6_applies(capsys, config: str, overlay: str, path: tuple):
    from alvae_pl.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--config", f"configs/{config}", "--config", f"configs/vae_features/{overlay}", "--print_config"])
    settings = yaml.safe_load(capsys.readouterr().out)
    for key in path:
        settings = settings[key]
    vae = settings["vae"]
    assert vae["class_path"] == "alvae_pl.models.label_aware_features.LabelAwareVAEFeatures"
    assert vae["init_args"]["marginalize"] == "exact" and vae["init_args"]["epochs_per_round"] == 5
