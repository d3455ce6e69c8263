"""The experiment file: what a multi-seed comparison runs, as dataclasses that jsonargparse checks.

An experiment is a small YAML file (``configs/experiments/<name>.yaml``)::

    name: digits_coreset          # runs go to <root>/<name>/<variant>/seed_<k>
    root: lightning_logs
    seeds: [0, 1, 2]
    baseline: coreset
    vae: configs/vae_digits.yaml  # optional, or a list: trained first if a selected variant reads its checkpoint
    variants:
      coreset: configs/digits_coreset.yaml
      coreset_vae: configs/digits_coreset_vae.yaml
      bald: [configs/digits_entropy.yaml, configs/heuristics/bald.yaml]  # merged in order, as train.py does
      label_aware:                # configs and train.py arguments of this variant only
        configs: [configs/digits_coreset.yaml, configs/vae_features/label_aware.yaml]
        overrides: [--active.heuristic.init_args.features.vae.init_args.marginalize=mean_field]
    overrides: []                 # extra train.py arguments for every run, the VAEs' included
    vae_overrides: []             # extra train.py arguments for the VAE runs only
    metric: test_accuracy         # the report's main metric

Types, required and unknown keys are jsonargparse's to check (:func:`parse_spec`); what only this file can know
(folder-safe names, distinct seeds, a baseline among the variants) is :meth:`ExperimentSpec.__post_init__`'s.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import yaml
from jsonargparse import ArgumentParser
from jsonargparse.typing import NonNegativeInt

#: Names the report and the SLURM submission (submitit's logs) use inside an experiment's folder: no variant may take
#: them.
RESERVED_FOLDERS = ("report", "slurm", ".", "..")


@dataclass(frozen=True)
class VariantSpec:
    """A variant with ``train.py`` arguments of its own.

    Attributes:
        configs: ``train.py`` YAML files, merged in order: a full config, then overlays.
        overrides: extra ``train.py`` arguments, after the experiment's ``overrides``.
    """

    configs: list[str]
    overrides: list[str] = field(default_factory=list)


# Union, not ``|``: jsonargparse evaluates these annotations at run time on every supported Python.
VariantEntry = Union[str, list[str], VariantSpec]  # noqa: UP007


@dataclass(frozen=True)
class ExperimentSpec:
    """A parsed experiment file; the module docstring shows every key."""

    name: str
    seeds: list[NonNegativeInt]
    baseline: str
    variants: dict[str, VariantEntry]
    root: str = "lightning_logs"
    vae: Union[str, list[str], None] = None  # noqa: UP007
    overrides: list[str] = field(default_factory=list)
    vae_overrides: list[str] = field(default_factory=list)
    metric: str = "test_accuracy"

    def __post_init__(self) -> None:
        if not _folder_name(self.name):
            raise ValueError(f"'name' must be a folder name without '/', got {self.name!r}")
        if not self.seeds:
            raise ValueError("'seeds' is empty; list at least one, e.g. [0, 1, 2]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"'seeds' repeats a seed: {self.seeds}")
        for variant in self.variants:
            if not _folder_name(variant) or variant in RESERVED_FOLDERS:
                raise ValueError(
                    f"variant name {variant!r} must be a folder name other than 'report' or 'slurm', without '/'"
                )
        if self.baseline not in self.variants:
            raise ValueError(f"baseline {self.baseline!r} is not a variant; choose one of {list(self.variants)}")
        if len(self.variants) < 2:
            raise ValueError("a comparison needs at least two variants: the baseline and another")
        if self.vae_overrides and not self.vae_configs:
            raise ValueError("'vae_overrides' given without a 'vae' config")
        if not self.metric:
            raise ValueError("'metric' must be a history column such as test_accuracy")

    @property
    def vae_configs(self) -> list[str]:
        """The VAE ``train.py`` configs, one per task-agnostic VAE the variants read."""
        return [self.vae] if isinstance(self.vae, str) else list(self.vae or ())

    def variant_configs(self, variant: str) -> tuple[list[str], list[str]]:
        """``(configs, overrides)`` of one variant, whichever of the three forms the file used."""
        entry = self.variants[variant]
        if isinstance(entry, VariantSpec):
            return list(entry.configs), list(entry.overrides)
        return ([entry] if isinstance(entry, str) else list(entry)), []


def _folder_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..")


#: What a key must hold, for the one-line message when jsonargparse finds it does not.
_EXPECTED: dict[str, str] = {
    "name": "a folder name",
    "seeds": "a list of non-negative integers, e.g. [0, 1, 2]",
    "baseline": "the name of a variant",
    "variants": (
        "a mapping of variant names to train.py configs, e.g. {coreset: configs/x.yaml}, to lists of configs "
        "merged in order, e.g. {bald: [configs/x.yaml, configs/heuristics/bald.yaml]}, or to "
        "{configs: [...], overrides: [--key=value, ...]}"
    ),
    "root": "a folder",
    "vae": "the path of a VAE train.py config, or a list of them",
    "overrides": "a list of train.py arguments (strings), e.g. [--trainer.devices=4]",
    "vae_overrides": "a list of train.py arguments (strings), e.g. [--trainer.max_epochs=40]",
    "metric": "a history column such as test_accuracy",
}
_EXAMPLE = "configs/experiments/digits_coreset.yaml"


def _parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("experiment", type=ExperimentSpec)
    return parser


def _one_line(message: str, content: dict[str, Any]) -> str:
    """jsonargparse's report on a bad experiment file, as one line that says what the key must hold."""
    first = message.strip().splitlines()[0] if message.strip() else message
    if match := re.search(r"arguments are required: (.+)", first):
        missing = [key.strip().removeprefix("experiment.") for key in match.group(1).split(",")]
        return f"missing key(s) {missing}; see {_EXAMPLE} for an example"
    if match := re.search(r"does not accept option '([^']+)'", first):
        known = sorted(field.name for field in fields(ExperimentSpec))
        unknown = sorted(set(content) - set(known)) or [match.group(1)]
        return f"unknown key(s) {unknown}; an experiment has {known}"
    if match := re.search(r'Parser key "experiment\.([^".]+)', first):
        key = match.group(1)
        return f"{key!r} must be {_EXPECTED.get(key, 'of another type')}, got {content.get(key)!r}"
    return first


def parse_spec(path: str | Path) -> ExperimentSpec:
    """Read and check an experiment file; every mistake is a one-line ``ValueError`` naming the file."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(
            f"experiment config {source} does not exist (relative paths start from the working directory)"
        )
    try:
        content = yaml.safe_load(source.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{source} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{source} must hold a YAML mapping (key: value lines), got {type(content).__name__}")
    given = {key: value for key, value in content.items() if value not in (None, "", [], {})}  # empty = not given
    parser = _parser()
    try:
        parsed = parser.parse_object({"experiment": given})
        return parser.instantiate(parsed).experiment
    except argparse.ArgumentError as error:
        raise ValueError(f"{source}: {_one_line(str(error), content)}") from None
    except ValueError as error:  # __post_init__
        raise ValueError(f"{source}: {error}") from None
