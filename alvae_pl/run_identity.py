"""What defines a run, so that a resume continues the same run or refuses; a checkpoint that cannot be read.

A run continued with ``--ckpt_path last`` must compute what the uninterrupted run would have: same data, pool,
seeds, heuristic and its features, budget and schedule, model and optimiser. How it runs may change: the devices,
the precision, logging and progress, the checkpoint interval, a lower ``max_labels``, the expert's answers file.
:func:`resume_differences` compares the configuration a checkpoint was written under with the one given now.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from alvae_pl.run_folder import CONFIG_FILENAME

#: Options (and the groups under them) that may differ between a run's checkpoint and the command that continues it.
MAY_CHANGE_ON_RESUME: tuple[str, ...] = (
    "ckpt_path",
    "weights_only",
    "labels",
    "trainer.accelerator",
    "trainer.strategy",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.precision",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.plugins",
    "trainer.profiler",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.enable_checkpointing",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
    "trainer.max_time",
    "checkpoint",
    "data.num_workers",
    "data.eval_batch_size",
    "data.data_on_device",
    "data.device_data_limit_gb",
    "data.image_store",  # where the same images are kept, not which images
    "data.memory_cap_gb",
    "model.init_args.compile",
    "model.init_args.compile_mode",
    "model.init_args.compile_backend",
    "model.init_args.cuda_graph",
    "model.init_args.train_auroc",
    "active.oracle.init_args.answers",
    "active.oracle.init_args.images_per_sheet",
    # Label Studio: a server moved, another token variable, another project title before the first query went out
    # (later the run keeps the project its label_studio.json names).
    "active.oracle.init_args.url",
    "active.oracle.init_args.token_env",
    "active.oracle.init_args.project",
)
#: Options that may only go down on resume (a run may end earlier than planned, not later).
MAY_DECREASE_ON_RESUME = ("active.max_labels",)


def flat_settings(config_yaml: str) -> dict[str, Any]:
    """A dumped configuration as ``{"dotted.key": value}`` (lists kept whole)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node

    walk(yaml.safe_load(config_yaml) or {}, "")
    return flat


def _may_change(key: str) -> bool:
    return any(key == option or key.startswith(f"{option}.") for option in MAY_CHANGE_ON_RESUME)


def _lower(before: Any, now: Any) -> bool:
    """``now`` ends the run no later than ``before`` (``None``: not before the pool is used up)."""
    if now is None:
        return before is None
    return before is None or now <= before


def _shown(value: Any) -> str:
    text = value.rsplit(".", 1)[-1] if isinstance(value, str) and value.count(".") >= 2 else repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def resume_differences(run: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The options that define the run and differ, each as ``key (run's value -> value now)``, sorted by key.

    Args:
        run: :func:`flat_settings` of the configuration the checkpoint was written under.
        now: the same for the command that continues it.

    Options present on one side only (added or removed by another version of this tool, or belonging to a class
    the other side does not use, whose ``class_path`` then differs) are not compared.
    """
    differences = []
    for key in sorted(run.keys() & now.keys()):
        before, after = run[key], now[key]
        if before == after or _may_change(key):
            continue
        if key in MAY_DECREASE_ON_RESUME and _lower(before, after):
            continue
        differences.append(f"{key} ({_shown(before)} -> {_shown(after)})")
    return differences


def check_resume(checkpoint: Path, folder: Path, config_now: str) -> dict[str, Any]:
    """Refuses, in one line, a checkpoint that cannot be read, or one written under settings that define another run
    (:mod:`alvae_pl.run_identity`) than ``config_now``; returns the checkpoint (tensors memory-mapped)."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"--ckpt_path {checkpoint}: no such checkpoint file")
    try:
        state = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True)
        config_then = state.get("callbacks", {}).get("RunConfigRecord", {}).get("config")
    except Exception as error:  # torch says "failed reading zip archive", "EOF", "invalid magic number"...
        text = str(error).strip()
        reason = re.split(r"(?<=[.:])\s", text.splitlines()[0])[0].rstrip(".:") if text else type(error).__name__
        raise CorruptCheckpoint(
            f"{checkpoint} is not a readable checkpoint ({checkpoint.stat().st_size:,} bytes; {reason}): the run "
            "cannot be continued from it; start it again in another folder with --trainer.logger.init_args.version "
            "<name> (this folder's records stay as they are)"
        ) from None
    if config_then is None and (folder / CONFIG_FILENAME).is_file():  # written before checkpoints held their config
        config_then = (folder / CONFIG_FILENAME).read_text()
    if config_then is None:
        return state
    differences = resume_differences(flat_settings(config_then), flat_settings(config_now))
    if differences:
        raise ValueError(
            f"{checkpoint} belongs to a run with other settings: {'; '.join(differences)}. Continue it with its own "
            "settings (its config.yaml), or start a new run in another folder with --trainer.logger.init_args.version "
            "<name>"
        )
    return state


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be read."""
