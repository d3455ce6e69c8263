"""The shipped configs: each one-file paper config names its data-set base (a ``config:`` key) and adds the heuristic
and, for ``*_vae``, the VAE's checkpoint; it must resolve to exactly the composition of the base, the heuristic
overlay and the VAE overlay, so that the one-command configs and the parts cannot drift apart."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest

from alvae_pl import acquisition
from alvae_pl.cli import main
from alvae_pl.experiments.train_config import config_arguments, parse_train_arguments
from tests.helpers.cli_runs import REPOSITORY

ONE_FILE_CONFIG = re.compile(r"^(digits|mnist|chestmnist)_(coreset|medal|lossnet|entropy|random)(_vae)?\.yaml$")
ONE_FILE_CONFIGS = sorted(p.name for p in (REPOSITORY / "configs").glob("*.yaml") if ONE_FILE_CONFIG.match(p.name))


def composition(name: str) -> list[str]:
    """``configs/data/<data>.yaml``, ``configs/heuristics/<heuristic>.yaml`` and, for ``*_vae``, the paper VAE's
    overlay (in the distances of core-set and MedAL, in the loss head of learning loss)."""
    match = ONE_FILE_CONFIG.match(name)
    assert match is not None
    data, heuristic, vae = match.groups()
    parts = [f"configs/data/{data}.yaml", f"configs/heuristics/{heuristic}.yaml"]
    if vae:
        parts.append(f"configs/vae_features/{data}{'_loss_head' if heuristic == 'lossnet' else ''}.yaml")
    return parts


def canonical(tree: Any) -> Any:
    """``tree`` with every ``class_path`` written as its class's defining module (``alvae_pl.acquisition.CoreSet``
    and ``alvae_pl.acquisition.coreset.CoreSet`` name one class)."""
    if isinstance(tree, dict):
        result = {key: canonical(value) for key, value in tree.items()}
        if isinstance(result.get("class_path"), str):
            module, name = result["class_path"].rsplit(".", 1)
            cls = getattr(importlib.import_module(module), name)
            result["class_path"] = f"{cls.__module__}.{cls.__qualname__}"
        return result
    if isinstance(tree, list):
        return [canonical(item) for item in tree]
    return tree


def settings(configs: list[str]) -> dict[str, Any]:
    """What train.py runs with, less what names the run (the logger's name, the config files)."""
    parsed = parse_train_arguments(tuple(config_arguments(configs))).as_dict()
    parsed.pop("config", None)
    del parsed["trainer"]["logger"]["init_args"]["name"]
    return canonical(parsed)


def test_every_one_file_paper_config_has_its_parts() -> None:
    assert len(ONE_FILE_CONFIGS) == 16  # 8 digits demos, 4 MNIST and 4 ChestMNIST paper configs


@pytest.mark.parametrize("name", ONE_FILE_CONFIGS)
def test_one_file_config_equals_its_composition(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPOSITORY)
    assert settings([f"configs/{name}"]) == settings(composition(name))


@pytest.mark.parametrize("name", ONE_FILE_CONFIGS)
def test_one_file_config_names_its_parts_instead_of_copying_them(name: str) -> None:
    """A base's settings live in one file: a one-command config starts from its base and adds only what differs."""
    lines = [line for line in (REPOSITORY / "configs" / name).read_text().splitlines() if not line.startswith("#")]
    assert lines[0].startswith("config: ")
    assert len(lines) <= 4


def test_help_offers_every_heuristic_a_user_can_choose_and_no_abstract_base(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    options = capsys.readouterr().out.split("\n  --active.heuristic HEURISTIC")[1].split("\n  --active.oracle")[0]
    offered = set(re.findall(r"alvae_pl\.acquisition\.(\w+)", re.sub(r"\s+", "", options)))
    concrete = {name for name in acquisition.__all__ if name not in ("Heuristic", "Selection")}
    assert {"CoreSet", "MedAL", "TypiClust", "ProbCover", "Entropy", "RandomSampling"} <= offered
    assert offered <= concrete | {"ClassBalanced"}
    assert not offered & {"PredictionHeuristic", "FeatureSpaceHeuristic", "DistanceHeuristic", "Heuristic"}
