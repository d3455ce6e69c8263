"""An experiment resolved against ``train.py``: its variants, VAE runs and run folders.

:func:`read_experiment` checks the file (:mod:`~alvae_pl.experiments.spec`), then asks ``train.py``'s parser
(:mod:`~alvae_pl.experiments.train_config`) what each variant and VAE run would do: which VAE checkpoints a
variant reads, where a VAE writes its own, and whether the overrides leave the runner's settings alone. Relative
paths (``root``, variant and VAE configs) start from the working directory, like ``train.py``'s ``--config``.
Seed ``k`` is both the training seed (``--seed_everything``) and the initial-label seed (``--data.pool_seed``),
so every variant of one seed starts from the same labels: a paired design.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jsonargparse import Namespace

from alvae_pl.experiments.spec import ExperimentSpec, parse_spec
from alvae_pl.experiments.train_config import (
    config_arguments,
    last_checkpoint,
    parse_train_arguments,
    run_folder,
    vae_checkpoints,
)


@dataclass(frozen=True)
class Variant:
    """One arm of the comparison: ``train.py`` configs, run once per seed.

    Attributes:
        name: folder name under the experiment, e.g. ``coreset_vae``.
        configs: the ``train.py`` YAML files, merged in order: a full config, then overlays.
        vae_checkpoints: the VAE checkpoints the run reads, as ``train.py`` parses its configs and overrides;
            empty when the variant needs no trained VAE.
        overrides: extra ``train.py`` arguments of this variant only, after the experiment's.
        train_config: what ``train.py`` parses from the configs and overrides (with stand-ins for the seed and run
            folder, which the runner sets per job); shared, not to be modified.
    """

    name: str
    configs: tuple[Path, ...]
    vae_checkpoints: tuple[Path, ...] = ()
    overrides: tuple[str, ...] = ()
    train_config: Namespace | None = field(default=None, compare=False, repr=False)

    @property
    def uses_vae(self) -> bool:
        return bool(self.vae_checkpoints)


@dataclass(frozen=True)
class VaeRun:
    """A task-agnostic VAE the experiment trains once (on the whole train split) for all its seeds.

    Attributes:
        config: ``configs/vae_<data>.yaml``.
        overrides: extra ``train.py`` arguments (the experiment's ``overrides`` then its ``vae_overrides``).
        folder: its run folder, where its logger writes.
        checkpoint: its ``last.ckpt``.
    """

    config: Path
    overrides: tuple[str, ...]
    folder: Path
    checkpoint: Path

    @property
    def label(self) -> str:
        return f"vae {self.config.stem}"


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment; see :mod:`alvae_pl.experiments.spec` for the file format."""

    name: str
    root: Path
    seeds: tuple[int, ...]
    baseline: str
    variants: Mapping[str, Variant]
    overrides: tuple[str, ...] = ()
    vaes: tuple[VaeRun, ...] = ()
    metric: str = "test_accuracy"
    source: Path | None = None

    @property
    def vae(self) -> VaeRun | None:
        """The first VAE run (most experiments have one), or None."""
        return self.vaes[0] if self.vaes else None

    @property
    def folder(self) -> Path:
        """``<root>/<name>``: one folder per variant inside, one ``seed_<k>`` folder per seed inside those."""
        return self.root / self.name

    @property
    def report_folder(self) -> Path:
        return self.folder / "report"

    def run_folder(self, variant: str, seed: int) -> Path:
        return self.folder / variant / f"seed_{seed}"

    def vaes_for(self, variant: Variant) -> list[VaeRun]:
        """The VAE runs whose checkpoints ``variant`` reads."""
        read = {_resolved(checkpoint) for checkpoint in variant.vae_checkpoints}
        return [vae for vae in self.vaes if _resolved(vae.checkpoint) in read]

    def runner_settings(self, variant: str, seed: int) -> dict[str, object]:
        """What the runner sets for the run of ``variant`` with ``seed`` (see :func:`runner_settings`)."""
        return runner_settings(self.root, self.name, variant, seed)

    def vae_label(self, vae: VaeRun) -> str:
        """``vae`` for an experiment's only VAE, ``vae <config name>`` where there are several."""
        return "vae" if len(self.vaes) == 1 else vae.label


def _resolved(path: Path) -> Path:
    return path.expanduser().resolve()


def runner_settings(root: Path, name: str, variant: str, seed: int) -> dict[str, object]:
    """What the runner sets for every task run (``train.py`` keys): the seeds of the paired design and the run
    folder ``<root>/<name>/<variant>/seed_<k>``. No override may change them."""
    return {
        "seed_everything": seed,
        "data.pool_seed": seed,
        "trainer.logger.init_args.save_dir": str(root),
        "trainer.logger.init_args.name": f"{name}/{variant}",
        "trainer.logger.init_args.version": f"seed_{seed}",
    }


def settings_arguments(settings: Mapping[str, object]) -> list[str]:
    return [f"--{key}={value}" for key, value in settings.items()]


# Every variant is parsed once with these stand-ins for the runner's settings (values no override would choose):
# the overrides are the same for every seed and experiment, so one parse checks them all, and the experiments that
# share a variant's configs share its parse.
_PROBE_SETTINGS = runner_settings(Path("runner-settings"), "runner-settings", "variant", 918_273_645)


def variant_arguments(configs: Sequence[str | Path], overrides: Sequence[str]) -> tuple[str, ...]:
    """The ``train.py fit`` arguments :func:`read_experiment` parses for a variant: its configs, the runner's
    settings (stand-ins) and the overrides."""
    return (*config_arguments(configs), *settings_arguments(_PROBE_SETTINGS), *overrides)


def _check_untouched(what: str, overrides: Sequence[str], ckpt_path: object, changed: Sequence[str]) -> None:
    """The overrides may not add configs, resume from a checkpoint or change what the runner sets. (A config file
    may itself name a base, ``config: data/digits.yaml``: that is one of its parts, not an added config.)"""
    keys = [f"--{key}" for key in changed]
    if any(argument == "--config" or argument.startswith("--config=") for argument in overrides):
        keys.append("--config")
    if ckpt_path is not None:
        keys.append("--ckpt_path")
    if keys:
        raise ValueError(
            f"{what} sets {', '.join(keys)}, which the runner sets for every run (seed, run folder, "
            "resume); remove it and use 'seeds'/'root'/'name' instead"
        )


def _vae_run(source: Path, config: str, overrides: Sequence[str]) -> VaeRun:
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"{source}: VAE config {path} does not exist (paths start from the working directory)")
    try:
        parsed = parse_train_arguments((*config_arguments([path]), *overrides))
        _check_untouched("'vae_overrides'", overrides, parsed.get("ckpt_path"), [])
        return VaeRun(path, tuple(overrides), run_folder(parsed), last_checkpoint(parsed))
    except ValueError as error:
        raise ValueError(f"{source}: VAE config {path}: {error}") from None


def _variant(experiment: Experiment, spec: ExperimentSpec, name: str, source: Path) -> Variant:
    configs, overrides = spec.variant_configs(name)
    for config in configs:
        if not Path(config).is_file():
            raise FileNotFoundError(
                f"{source}: variant {name!r}: config {config} does not exist (paths start from the working directory)"
            )
    try:
        parsed = parse_train_arguments(variant_arguments(configs, [*experiment.overrides, *overrides]))
        changed = [key for key, value in _PROBE_SETTINGS.items() if str(parsed[key]) != str(value)]
        what = "'overrides'" if not overrides else f"'overrides' or variants.{name}.overrides"
        _check_untouched(what, [*experiment.overrides, *overrides], parsed.get("ckpt_path"), changed)
    except ValueError as error:
        raise ValueError(f"{source}: variant {name!r}: {error}") from None
    return Variant(name, tuple(Path(c) for c in configs), tuple(vae_checkpoints(parsed)), tuple(overrides), parsed)


def read_experiment(path: str | Path) -> Experiment:
    """Parse and check an experiment file against ``train.py``; every mistake is a one-line ValueError or
    FileNotFoundError naming the file."""
    source = Path(path)
    spec = parse_spec(source)
    vaes = tuple(_vae_run(source, config, [*spec.overrides, *spec.vae_overrides]) for config in spec.vae_configs)
    experiment = Experiment(
        name=spec.name,
        root=Path(spec.root),
        seeds=tuple(spec.seeds),
        baseline=spec.baseline,
        variants={},
        overrides=tuple(spec.overrides),
        vaes=vaes,
        metric=spec.metric,
        source=source,
    )
    variants = {name: _variant(experiment, spec, name, source) for name in spec.variants}
    for variant in variants.values() if vaes else ():  # without 'vae', variants read VAEs trained elsewhere
        for checkpoint in variant.vae_checkpoints:
            if not any(_resolved(checkpoint) == _resolved(vae.checkpoint) for vae in vaes):
                written = "; ".join(f"{vae.config} writes {vae.checkpoint}" for vae in vaes)
                raise ValueError(
                    f"{source}: variant {variant.name!r} reads the VAE checkpoint {checkpoint} but {written}; make "
                    "them agree (list the VAE's config under 'vae')"
                )
    return Experiment(**{**vars(experiment), "variants": variants})
