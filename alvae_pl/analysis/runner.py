"""Multi-seed experiments: one ``train.py`` run per (variant, seed), skipped when finished, resumed when interrupted.

An experiment is a small YAML file (``configs/experiments/<name>.yaml``)::

    name: digits_coreset          # runs go to <root>/<name>/<variant>/seed_<k>
    root: lightning_logs
    seeds: [0, 1, 2]
    baseline: coreset
    vae: configs/vae_digits.yaml  # optional: trained first if a selected variant reads its checkpoint
    variants:
      coreset: configs/digits_coreset.yaml
      coreset_vae: configs/digits_coreset_vae.yaml
      bald: [configs/digits_entropy.yaml, configs/heuristics/bald.yaml]  # merged in order, as train.py does
    overrides: []                 # extra train.py arguments for every run, the VAE's included
    vae_overrides: []             # extra train.py arguments for the VAE run only
    metric: test_accuracy         # the report's main metric

Relative paths (``root``, variant and VAE configs) are taken from the working directory, like ``train.py``'s
``--config``. Seed ``k`` is both the training seed (``--seed_everything``) and the initial-label seed
(``--data.pool_seed``), so every variant of one seed starts from the same labels: a paired design.

Nothing here imports torch at module level, so listing jobs stays instant.
"""

from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from alvae_pl.run_status import read_run_status

REPOSITORY = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPOSITORY / "train.py"
#: Lines of a failed run's output quoted in the error.
TAIL_LINES = 25
#: Training output of each run, appended to at every attempt, in the run folder.
LOG_FILENAME = "train.log"

RunState = Literal["finished", "resume", "start"]
#: What ``run`` prints for each state.
STATE_WORDS: dict[str, str] = {"finished": "skipped", "resume": "resumed", "start": "started"}

# The runner decides these for every task run; an override setting one would break the folder layout or pairing.
_RUNNER_KEYS = (
    "--seed_everything",
    "--data.pool_seed",
    "--trainer.logger.init_args.save_dir",
    "--trainer.logger.init_args.name",
    "--trainer.logger.init_args.version",
    "--ckpt_path",
    "--config",
)
_EXPERIMENT_KEYS = {"name", "root", "seeds", "baseline", "vae", "variants", "overrides", "vae_overrides", "metric"}
_REQUIRED_KEYS = ("name", "seeds", "baseline", "variants")
# CLI defaults of the logger (alvae_pl.cli.AlvaeCLI), used when a VAE config leaves them out.
_LOGGER_DEFAULTS = {"save_dir": "lightning_logs", "name": "default", "version": "run"}


class RunFailed(RuntimeError):
    """A ``train.py`` run exited with an error; the message names its folder and quotes its output's tail."""


# ------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class Variant:
    """One arm of the comparison: ``train.py`` configs, run once per seed.

    Attributes:
        name: folder name under the experiment, e.g. ``coreset_vae``.
        configs: the ``train.py`` YAML files, merged in order (``--config a.yaml --config b.yaml``): a full config,
            then overlays such as ``configs/heuristics/bald.yaml``.
        vae_checkpoints: the VAE checkpoint the YAML files name (``vae: {checkpoint}``; the last file's wins),
            empty when the variant needs no VAE.
        overrides: extra ``train.py`` arguments of this variant only, after the experiment's.
    """

    name: str
    configs: tuple[Path, ...]
    vae_checkpoints: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()

    @property
    def uses_vae(self) -> bool:
        return bool(self.vae_checkpoints)


@dataclass(frozen=True)
class VaeRun:
    """The task-agnostic VAE an experiment trains once (on the whole train split) for all its seeds.

    Attributes:
        config: ``configs/vae_<data>.yaml``.
        overrides: extra ``train.py`` arguments (the experiment's ``overrides`` then its ``vae_overrides``).
        folder: its run folder ``<save_dir>/<name>/<version>``, from the config's logger and the overrides.
        checkpoint: ``<folder>/checkpoints/last.ckpt`` (or under the config's ``checkpoint.dirpath``).
    """

    config: Path
    overrides: tuple[str, ...]
    folder: Path
    checkpoint: Path


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment YAML; see the module docstring for the file format."""

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

    def vaes_for(self, variant: Variant) -> list[VaeRun]:
        """The VAE runs whose checkpoints ``variant`` reads."""
        read = {Path(checkpoint).expanduser().resolve() for checkpoint in variant.vae_checkpoints}
        return [vae for vae in self.vaes if vae.checkpoint.expanduser().resolve() in read]

    @property
    def folder(self) -> Path:
        """``<root>/<name>``: one folder per variant inside, one ``seed_<k>`` folder per seed inside those."""
        return self.root / self.name

    @property
    def report_folder(self) -> Path:
        return self.folder / "report"

    def run_folder(self, variant: str, seed: int) -> Path:
        return self.folder / variant / f"seed_{seed}"


def _fail(source: Path, message: str) -> ValueError:
    return ValueError(f"{source}: {message}")


def _string_list(value: Any, key: str, source: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail(source, f"{key!r} must be a list of train.py arguments (strings), e.g. [--trainer.devices=4]")
    return tuple(value)


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist (relative paths start from the working directory)")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a YAML mapping (key: value lines), got {type(content).__name__}")
    return content


def find_values(tree: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere in a nested dict/list tree (a parsed YAML)."""
    if isinstance(tree, dict):
        for name, value in tree.items():
            if name == key:
                yield value
            yield from find_values(value, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from find_values(item, key)


def vae_checkpoints(tree: Any) -> Iterator[Any]:
    """The ``checkpoint`` of every VAE-features setting (``vae: {checkpoint: ...}``, or with ``init_args``) in a
    parsed ``train.py`` config."""
    for value in find_values(tree, "vae"):
        if isinstance(value, dict):
            settings = value.get("init_args", value)
            yield settings.get("checkpoint") if isinstance(settings, dict) else None


def override_value(overrides: Sequence[str], key: str) -> str | None:
    """The last value ``overrides`` give ``key`` (``--key=value`` or ``--key value``), or None."""
    found = None
    for position, token in enumerate(overrides):
        if token.startswith(key + "="):
            found = token[len(key) + 1 :]
        elif token == key and position + 1 < len(overrides):
            found = overrides[position + 1]
    return found


def _check_overrides(overrides: Sequence[str], key: str, source: Path, reserved_keys: Sequence[str]) -> None:
    for token in overrides:
        for reserved in reserved_keys:
            if token == reserved or token.startswith(reserved + "=") or token.startswith(reserved + "."):
                raise _fail(
                    source,
                    f"{key!r} sets {reserved}, which the runner sets for every run (seed, run folder, resume); "
                    "remove it and use 'seeds'/'root'/'name' instead",
                )


def vae_run(config: Path, overrides: Sequence[str]) -> VaeRun:
    """Where ``train.py fit --config <config> <overrides>`` writes its run folder and last checkpoint."""
    content = _read_yaml(config, "VAE config")
    logger = (content.get("trainer") or {}).get("logger")
    init_args = dict(_LOGGER_DEFAULTS)
    if isinstance(logger, dict) and "TensorBoardLogger" in str(logger.get("class_path", "")):
        init_args.update(logger.get("init_args") or {})
    elif logger not in (None, True):
        raise ValueError(
            f"{config}: the VAE config must log with a TensorBoardLogger (fixed save_dir/name/version), "
            "so that its checkpoint has a known place"
        )
    for name in ("save_dir", "name", "version"):
        value = override_value(overrides, f"--trainer.logger.init_args.{name}")
        if value is not None:
            init_args[name] = yaml.safe_load(value)
    version = init_args["version"]
    if version is None:
        raise ValueError(
            f"{config}: set trainer.logger.init_args.version (e.g. seed_0): with automatic versioning every "
            "run writes a new folder and the VAE checkpoint cannot be found"
        )
    folder = (
        Path(str(init_args["save_dir"]))
        / str(init_args["name"])
        / (f"version_{version}" if isinstance(version, int) else str(version))
    )
    dirpath = override_value(overrides, "--checkpoint.dirpath") or (content.get("checkpoint") or {}).get("dirpath")
    checkpoint = (Path(str(dirpath)) if dirpath else folder / "checkpoints") / "last.ckpt"
    return VaeRun(config=config, overrides=tuple(overrides), folder=folder, checkpoint=checkpoint)


def read_experiment(path: str | Path) -> Experiment:
    """Parse and check an experiment YAML; every mistake is a one-line ValueError/FileNotFoundError."""
    source = Path(path)
    content = _read_yaml(source, "experiment config")
    unknown = sorted(set(content) - _EXPERIMENT_KEYS)
    if unknown:
        raise _fail(source, f"unknown key(s) {unknown}; an experiment has {sorted(_EXPERIMENT_KEYS)}")
    missing = [key for key in _REQUIRED_KEYS if content.get(key) in (None, "", [], {})]
    if missing:
        raise _fail(source, f"missing key(s) {missing}; see configs/experiments/digits_coreset.yaml for an example")
    name = content["name"]
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise _fail(source, f"'name' must be a folder name without '/', got {name!r}")
    seeds = content["seeds"]
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise _fail(source, f"'seeds' must be a list of non-negative integers, e.g. [0, 1, 2], got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise _fail(source, f"'seeds' repeats a seed: {seeds}")
    variants_spec = content["variants"]

    def config_list(value: Any) -> bool:
        return isinstance(value, str) or (isinstance(value, list) and bool(value) and all(isinstance(c, str) for c in value))

    if not isinstance(variants_spec, dict) or not all(
        isinstance(k, str)
        and (
            config_list(v)
            or (isinstance(v, dict) and set(v) <= {"configs", "overrides"} and config_list(v.get("configs")))
        )
        for k, v in variants_spec.items()
    ):
        raise _fail(
            source,
            "'variants' must map variant names to train.py configs, e.g. {coreset: configs/x.yaml}, to lists of "
            "configs merged in order, e.g. {bald: [configs/x.yaml, configs/heuristics/bald.yaml]}, or to "
            "{configs: [...], overrides: [--key=value, ...]}",
        )
    overrides = _string_list(content.get("overrides"), "overrides", source)
    vae_overrides = _string_list(content.get("vae_overrides"), "vae_overrides", source)
    _check_overrides(overrides, "overrides", source, _RUNNER_KEYS)
    _check_overrides(vae_overrides, "vae_overrides", source, ("--ckpt_path", "--config"))
    variants: dict[str, Variant] = {}
    for variant, spec in variants_spec.items():
        configs = spec["configs"] if isinstance(spec, dict) else spec
        variant_overrides = _string_list(spec.get("overrides"), f"variants.{variant}.overrides", source) if isinstance(
            spec, dict
        ) else ()
        _check_overrides(variant_overrides, f"variants.{variant}.overrides", source, _RUNNER_KEYS)
        if not variant or "/" in variant or variant in (".", "..", "report"):
            raise _fail(source, f"variant name {variant!r} must be a folder name other than 'report', without '/'")
        config_paths = tuple(Path(config) for config in ([configs] if isinstance(configs, str) else configs))
        for config_path in config_paths:
            if not config_path.is_file():
                raise FileNotFoundError(
                    f"{source}: variant {variant!r}: config {config_path} does not exist "
                    "(paths start from the working directory)"
                )
        named = [vae_checkpoints(_read_yaml(path, "variant config")) for path in config_paths]
        # A later file overrides an earlier one's checkpoint: keep the last non-null value only.
        values = [str(v) for found in named for v in found if v is not None]
        variants[variant] = Variant(variant, config_paths, tuple(values[-1:]), variant_overrides)
    baseline = content["baseline"]
    if baseline not in variants:
        raise _fail(source, f"baseline {baseline!r} is not a variant; choose one of {list(variants)}")
    if len(variants) < 2:
        raise _fail(source, "a comparison needs at least two variants: the baseline and another")
    vaes: tuple[VaeRun, ...] = ()
    if content.get("vae") is not None:
        vae_configs = content["vae"]
        if isinstance(vae_configs, str):
            vae_configs = [vae_configs]
        if not (isinstance(vae_configs, list) and vae_configs and all(isinstance(c, str) for c in vae_configs)):
            raise _fail(
                source, f"'vae' must be the path of a VAE train.py config, or a list of them, got {content['vae']!r}"
            )
        vaes = tuple(vae_run(Path(config), overrides + vae_overrides) for config in vae_configs)
        for variant in variants.values():
            for checkpoint in variant.vae_checkpoints:
                if not any(
                    Path(checkpoint).expanduser().resolve() == vae.checkpoint.expanduser().resolve() for vae in vaes
                ):
                    written = ", ".join(f"{vae.config} writes {vae.checkpoint}" for vae in vaes)
                    raise _fail(
                        source,
                        f"variant {variant.name!r} reads the VAE checkpoint {checkpoint} but {written}; "
                        "make them agree",
                    )
    elif vae_overrides:
        raise _fail(source, "'vae_overrides' given without a 'vae' config")
    metric = content.get("metric", "test_accuracy")
    if not isinstance(metric, str) or not metric:
        raise _fail(source, f"'metric' must be a history column such as test_accuracy, got {metric!r}")
    return Experiment(
        name=name,
        root=Path(str(content.get("root", "lightning_logs"))),
        seeds=tuple(seeds),
        baseline=baseline,
        variants=variants,
        overrides=overrides,
        vaes=vaes,
        metric=metric,
        source=source,
    )


# -------------------------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """One ``train.py`` run of the experiment: ``index = variant position * len(seeds) + seed position``."""

    index: int
    variant: Variant
    seed: int
    folder: Path


def expand_jobs(experiment: Experiment) -> list[Job]:
    """Every (variant, seed) job, variant-major in config order: the flat index a SLURM array task passes."""
    jobs = []
    for variant in experiment.variants.values():
        for seed in experiment.seeds:
            jobs.append(Job(len(jobs), variant, seed, experiment.run_folder(variant.name, seed)))
    return jobs


def select_jobs(
    experiment: Experiment,
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    index: int | None = None,
) -> list[Job]:
    """The jobs to run: all, those of the given variants and/or seeds, or the one at flat ``index``."""
    jobs = expand_jobs(experiment)
    if index is not None:
        if variants or seeds:
            raise ValueError("pass either --index or --variant/--seed, not both")
        if not 0 <= index < len(jobs):
            raise ValueError(
                f"--index {index} is out of range: the experiment has {len(jobs)} jobs (0..{len(jobs) - 1}); "
                "see `python experiment.py list`"
            )
        return [jobs[index]]
    for variant in variants or ():
        if variant not in experiment.variants:
            raise ValueError(f"unknown variant {variant!r}; choose one of {list(experiment.variants)}")
    for seed in seeds or ():
        if seed not in experiment.seeds:
            raise ValueError(f"seed {seed} is not one of the experiment's seeds {list(experiment.seeds)}")
    return [job for job in jobs if (not variants or job.variant.name in variants) and (not seeds or job.seed in seeds)]


def task_run_state(folder: Path) -> RunState:
    """``finished`` (the run's ``run_status.json`` says so), ``resume`` (a ``last.ckpt`` to resume from) or
    ``start``."""
    if read_run_status(folder) == "finished":
        return "finished"
    return "resume" if (folder / "checkpoints" / "last.ckpt").is_file() else "start"


def vae_run_state(vae: VaeRun) -> RunState:
    """The same for the experiment's VAE run, whose folder the VAE config's logger names."""
    if read_run_status(vae.folder) == "finished":
        return "finished"
    return "resume" if vae.checkpoint.is_file() else "start"


def task_command(experiment: Experiment, job: Job, launcher: Sequence[str]) -> list[str]:
    """The ``train.py fit`` command of one job (``launcher``: e.g. ``[python, train.py]``)."""
    return [
        *launcher,
        "fit",
        *(argument for config in job.variant.configs for argument in ("--config", str(config))),
        f"--seed_everything={job.seed}",
        f"--data.pool_seed={job.seed}",
        f"--trainer.logger.init_args.save_dir={experiment.root}",
        f"--trainer.logger.init_args.name={experiment.name}/{job.variant.name}",
        f"--trainer.logger.init_args.version=seed_{job.seed}",
        *_resume(job.folder),
        *experiment.overrides,
        *job.variant.overrides,
    ]


def vae_command(vae: VaeRun, launcher: Sequence[str]) -> list[str]:
    return [*launcher, "fit", "--config", str(vae.config), *_resume(vae.folder), *vae.overrides]


#: What ``train.py`` refuses to start over without ``--ckpt_path`` (``alvae_pl.cli.RUN_RECORDS``, not imported here:
#: it would import torch).
RUN_RECORDS = ("history.csv", "labeled.csv", "checkpoints/last.ckpt")


def _resume(folder: Path) -> list[str]:
    """``--ckpt_path=last`` where an earlier attempt left records, none for a fresh run (where Lightning would
    warn that there is no checkpoint to load)."""
    return ["--ckpt_path=last"] if any((folder / name).exists() for name in RUN_RECORDS) else []


# ------------------------------------------------------------------------------------------------ running
@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    tail: str


def run_process(command: Sequence[str], log_path: Path, echo: bool = False) -> ProcessResult:
    """Run ``command``, appending its merged stdout/stderr to ``log_path`` (and to our stdout with ``echo``).

    Read as bytes so that progress bars' carriage returns pass through unchanged; the tail keeps the last
    64 KiB for the error message.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail = bytearray()
    with log_path.open("ab") as log:
        log.write(f"\n$ {shlex.join(command)}\n".encode())
        log.flush()
        # Unbuffered: a pipe would otherwise hold Python's prints back until exit, and the log would lag.
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment)
        assert process.stdout is not None
        try:
            while chunk := process.stdout.read1(65536):
                log.write(chunk)
                if echo:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                tail += chunk
                del tail[: max(0, len(tail) - 65536)]
        finally:
            returncode = process.wait()
    return ProcessResult(returncode, tail.decode(errors="replace"))


def _tail_lines(text: str, count: int = TAIL_LINES) -> str:
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return "\n".join(lines[-count:])


@dataclass
class RunSummary:
    """What ``run_experiment`` did: ``(what, state word)`` per job, VAE first when it was considered."""

    actions: list[tuple[str, str]] = field(default_factory=list)


def _execute(
    what: str,
    command: list[str],
    folder: Path,
    state: RunState,
    dry_run: bool,
    echo: bool,
    log: Callable[[str], None],
    runner: Callable[[Sequence[str], Path, bool], ProcessResult] | None,
    describe_outcome: Callable[[], str] | None = None,
) -> str:
    """Run one job unless finished; logs a start line, then a done line with its duration (and
    ``describe_outcome()``), or raises ``RunFailed``."""
    runner = runner if runner is not None else run_process
    word = STATE_WORDS[state]
    if state == "finished":
        log(f"{what}: skipped (finished) {folder}")
        return word
    if dry_run:
        log(f"{what}: would be {word} {folder}\n  {shlex.join(command)}")
        return f"would be {word}"
    log(f"{what}: {word} {folder} (output in {folder / LOG_FILENAME})")
    started = time.monotonic()
    result = runner(command, folder / LOG_FILENAME, echo)
    took = _duration(time.monotonic() - started)
    if result.returncode != 0:
        raise RunFailed(
            f"{what} failed with exit code {result.returncode} after {took}; run folder {folder}, full output in "
            f"{folder / LOG_FILENAME}; last lines:\n{_tail_lines(result.tail)}"
        )
    outcome = describe_outcome() if describe_outcome is not None else ""
    log(f"{what}: done in {took}{f'; {outcome}' if outcome else ''}")
    return word


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def final_metric(folder: Path, metric: str) -> str:
    """``val_accuracy 0.9222 at 400 labels``: the metric in the last row of a run's ``history.csv`` (or "")."""
    path = folder / "history.csv"
    if not path.is_file():
        return ""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not (rows[-1].get(metric) or "").strip():
        return ""
    return f"{metric} {float(rows[-1][metric]):.4f} at {rows[-1].get('labels', '?')} labels"


def ensure_vae(
    experiment: Experiment,
    *,
    dry_run: bool = False,
    echo: bool = False,
    launcher: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    runner: Callable[[Sequence[str], Path, bool], ProcessResult] | None = None,
) -> str:
    """Train (or finish training) the experiment's VAEs unless their runs are finished; returns the state words."""
    if not experiment.vaes:
        raise ValueError(f"experiment {experiment.name!r} names no VAE config ('vae:' key)")
    launcher = list(launcher) if launcher is not None else default_launcher()
    words = [
        _execute(_vae_label(experiment, vae), vae_command(vae, launcher), vae.folder, vae_run_state(vae), dry_run, echo, log, runner)
        for vae in experiment.vaes
    ]
    return ", ".join(words)


def _vae_label(experiment: Experiment, vae: VaeRun) -> str:
    """``vae`` for an experiment's only VAE, ``vae <config stem>`` where there are several."""
    return "vae" if len(experiment.vaes) == 1 else f"vae {vae.config.stem}"


def default_launcher() -> list[str]:
    """``[this python, <repository>/train.py]``."""
    if not TRAIN_SCRIPT.is_file():
        raise FileNotFoundError(f"{TRAIN_SCRIPT} is missing: run the experiments from a checkout of the repository")
    return [sys.executable, str(TRAIN_SCRIPT)]


def run_experiment(
    experiment: Experiment,
    jobs: Iterable[Job],
    *,
    train_vae: bool = True,
    dry_run: bool = False,
    echo: bool = False,
    launcher: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    runner: Callable[[Sequence[str], Path, bool], ProcessResult] | None = None,
) -> RunSummary:
    """Run ``jobs`` one after the other: skip finished runs, resume interrupted ones, start the rest.

    The VAE comes first when an unfinished job reads it and its run is not finished: it is trained when ``train_vae``;
    otherwise (a SLURM array task, where concurrent tasks must not train it side by side) that is an error.

    Args:
        experiment: from :func:`read_experiment`.
        jobs: from :func:`select_jobs`.
        train_vae: train a missing or unfinished VAE before the jobs that need it.
        dry_run: print the commands instead of running them.
        echo: also copy the runs' output to stdout (it always goes to ``<run folder>/train.log``).
        launcher: the program that takes ``fit --config ...`` (default: this Python running ``train.py``).
        log: receives one line per job: skipped / resumed / started.
        runner: runs one command (default :func:`run_process`; tests replace it).

    Raises:
        RunFailed: a run exited with an error; later jobs are not started.
    """
    jobs = list(jobs)
    launcher = list(launcher) if launcher is not None else default_launcher()
    summary = RunSummary()
    needed = [
        vae
        for vae in experiment.vaes
        if any(vae in experiment.vaes_for(job.variant) and task_run_state(job.folder) != "finished" for job in jobs)
    ]
    for vae in needed:
        state = vae_run_state(vae)
        if state != "finished" and not train_vae and not dry_run:
            raise ValueError(
                f"the VAE at {vae.checkpoint} is not trained yet; run `python experiment.py vae --config "
                f"{experiment.source}` first (for a SLURM array: as a job the array depends on)"
            )
        if state != "finished" and not train_vae:
            log(f"{_vae_label(experiment, vae)}: missing, and not trained by a single --index job: run `experiment.py vae` first")
        else:
            command = vae_command(vae, launcher)
            word = _execute(_vae_label(experiment, vae), command, vae.folder, state, dry_run, echo, log, runner)
            summary.actions.append((_vae_label(experiment, vae), word))
    run_seconds: list[float] = []  # of the jobs run by this call, for the time-left estimate
    for position, job in enumerate(jobs):
        what = f"[{job.index}] {job.variant.name} seed {job.seed}"
        command = task_command(experiment, job, launcher)
        state = task_run_state(job.folder)
        started = time.monotonic()
        word = _execute(
            what,
            command,
            job.folder,
            state,
            dry_run,
            echo,
            log,
            runner,
            lambda job=job: final_metric(job.folder, experiment.metric),
        )
        summary.actions.append((f"{job.variant.name}/seed_{job.seed}", word))
        if state != "finished" and not dry_run:
            run_seconds.append(time.monotonic() - started)
            left = sum(task_run_state(later.folder) != "finished" for later in jobs[position + 1 :])
            estimate = f", about {_duration(left * sum(run_seconds) / len(run_seconds))} left" if left else ""
            log(f"{position + 1} of {len(jobs)} jobs done{estimate}")
    return summary


def describe_jobs(experiment: Experiment, jobs: Sequence[Job]) -> str:
    """A table of jobs: flat index, variant, seed, state and run folder (what ``experiment.py list`` prints)."""
    lines = [f"{'index':>5}  {'variant':<20} {'seed':>4}  {'state':<8} folder"]
    for job in jobs:
        lines.append(
            f"{job.index:>5}  {job.variant.name:<20} {job.seed:>4}  {task_run_state(job.folder):<8} {job.folder}"
        )
    for vae in experiment.vaes:
        lines.append(f"  vae  {vae.config} -> {vae.checkpoint} ({vae_run_state(vae)})")
    lines.append(f"{len(jobs)} jobs; SLURM: --array=0-{len(jobs) - 1} with `run --index $SLURM_ARRAY_TASK_ID`")
    return "\n".join(lines)
