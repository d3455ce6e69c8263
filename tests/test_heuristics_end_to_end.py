"""Every heuristic of the paper, with and without VAE features, through two rounds of ``train.py`` on digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alvae_pl.cli import main
from alvae_pl.run_status import read_run_status
from tests.helpers.cli_runs import RESNET18, TINY, TWO_ROUNDS, read_csv


@pytest.fixture(scope="module")
def vae_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VAE trained on digits by its own config, for one epoch on 256 of the train split's images (the heuristics read
    its features; what they know is measured elsewhere)."""
    folder = tmp_path_factory.mktemp("vae")
    main(
        [
            "fit",
            "--config",
            "configs/vae_digits.yaml",
            f"--trainer.logger.init_args.save_dir={folder}",
            "--trainer.max_epochs=1",
            "--data.pool_size=256",
            "--trainer.enable_progress_bar=false",
        ]
    )
    checkpoint = folder / "vae_digits" / "seed_0" / "checkpoints" / "last.ckpt"
    assert checkpoint.exists()
    # Its config sets no initial labels (the VAE needs none), and the run records that it finished.
    assert read_run_status(checkpoint.parent.parent) == "finished"
    return checkpoint


#: The real ResNet-18 instead of the tests' narrow one: its 512-d embedding in the distances and its 64 ... 512-channel
#: block outputs in the loss head, once each (slow: a few seconds per round on 2 cores).
ON_RESNET18 = pytest.mark.slow


@pytest.mark.parametrize(
    ("config", "vae_option", "network"),
    [
        ("digits_coreset", None, TINY),
        ("digits_coreset_vae", "--active.heuristic.init_args.features.vae.checkpoint", TINY),
        ("digits_medal", None, TINY),
        ("digits_medal_vae", "--active.heuristic.init_args.features.vae.checkpoint", TINY),
        ("digits_lossnet", None, TINY),
        ("digits_lossnet_vae", "--model.init_args.vae.checkpoint", TINY),
        pytest.param(
            "digits_coreset_vae", "--active.heuristic.init_args.features.vae.checkpoint", RESNET18, marks=ON_RESNET18
        ),
        pytest.param("digits_lossnet_vae", "--model.init_args.vae.checkpoint", RESNET18, marks=ON_RESNET18),
    ],
    ids=lambda value: "resnet18" if value == RESNET18 else "tiny" if value == TINY else None,
)
def test_two_rounds_label_exactly_the_budget(
    tmp_path: Path, vae_checkpoint: Path, config: str, vae_option: str, network: list[str]
) -> None:
    extra = [f"{vae_option}={vae_checkpoint}"] if vae_option else []
    cli = main(
        [
            "fit",
            "--config",
            f"configs/{config}.yaml",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *TWO_ROUNDS,
            *network,
            *extra,
        ]
    )
    run = tmp_path / config / "seed_0"
    history = read_csv(run / "history.csv")
    assert [int(r["labels"]) for r in history] == [60, 120]
    labeled = read_csv(run / "labeled.csv")
    assert len({r["pool_index"] for r in labeled}) == 120
    picked = [r for r in labeled if r["round"] == "1"]
    assert len(picked) == 60 and all(r["score"] != "" for r in picked)
    if config.startswith(("digits_coreset", "digits_medal")):
        # Greedy distance heuristics: each pick's score (its distance at pick time) never increases for core-set.
        scores = [float(r["score"]) for r in picked]
        assert all(s > 0 for s in scores)
        if "coreset" in config:
            assert scores == sorted(scores, reverse=True)
    if config == "digits_lossnet_vae":
        vae = cli.model.vae
        assert vae is not None and not vae.encoder.training  # the frozen encoder never left eval mode
        assert all(not p.requires_grad for p in vae.parameters())
        reference = torch.load(vae_checkpoint, weights_only=True)["state_dict"]
        # Weights and batch-norm statistics alike are still the checkpoint's after two rounds of training.
        encoder_state = vae.encoder.state_dict()
        assert encoder_state
        assert all(torch.equal(value, reference[f"network.{name}"]) for name, value in encoder_state.items())
