"""Algorithm 1 of the paper inside one ``trainer.fit``: train, evaluate, select, label, retrain from scratch."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from alvae_pl.acquisition.feature_space import FeatureSpace
from alvae_pl.acquisition.heuristic import Heuristic
from alvae_pl.acquisition.random_sampling import RandomSampling
from alvae_pl.callbacks.acquisition_step import acquire, settle
from alvae_pl.callbacks.correction_step import apply_corrections, warn_of_edited_queries
from alvae_pl.callbacks.label_aware_retraining import LabelAwareRetraining
from alvae_pl.callbacks.query_predictions import with_predictions
from alvae_pl.callbacks.round_evaluation import evaluate_splits, recompute_batch_norm_on_labeled
from alvae_pl.callbacks.run_checkpoint import RunCheckpoint
from alvae_pl.callbacks.run_records import (
    HISTORY_COLUMNS,
    curve_columns,
    history_columns,
    labeled_table,
    write_csv_atomically,
)
from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.models.task_model import TaskModel
from alvae_pl.oracles.oracle import Oracle, Query, SimulatedOracle
from alvae_pl.round_model import save_round_model
from alvae_pl.run_folder import HISTORY_FILENAME, LABELED_FILENAME
from alvae_pl.run_status import write_run_status
from alvae_pl.seeding import ACQUISITION_STREAM, START_STREAM, derive_seed
from alvae_pl.stopping import StopMeasures, StoppingRule, first_stop, rows_to_columns


def _needs_no_task_model(heuristic: Heuristic) -> bool:
    """Whether ``heuristic`` can choose before any task model exists: it reads no model, or only task-agnostic
    features (a feature space with ``task_weight: 0``)."""
    features = getattr(heuristic, "features", None)
    return not heuristic.uses_model or (isinstance(features, FeatureSpace) and features.task_weight == 0)


def finished_line(history: list[dict[str, Any]], folder: Path, earlier: bool, stop_reason: str | None = None) -> str:
    """The closing line of a finished run with rows ``history``: what it reached (``earlier``: that it finished
    before this command, which did nothing), the stopping rule that ended it early if one did, and where its records
    are."""
    last = history[-1]
    rounds = f"{len(history)} round{'s' if len(history) > 1 else ''}"
    where = f"records in {folder} (history.csv, labeled.csv)"
    stopped = f"; stopped by {stop_reason}" if stop_reason else ""
    if earlier:
        return f"Nothing to do: this run finished earlier ({rounds}, {last['labels']} labels{stopped}); {where}"
    metrics = ", ".join(
        f"{key} {last[key]:.4f}" for key in ("val_accuracy", "val_auroc") if not math.isnan(last.get(key, math.nan))
    )
    return f"Finished: {rounds}, {last['labels']} labels, {metrics}{stopped}; {where}"


def round_seed(seed: int, round_index: int) -> int:
    """The seed of one round's random choices: derived, never taken from global RNG state."""
    return derive_seed(seed, ACQUISITION_STREAM, round_index + 1)


class ActiveLearningLoop(Callback):
    """Runs the rounds of active learning between training epochs.

    A round trains the task model for ``epochs_first + round * epochs_increment`` epochs (or fewer, once
    train accuracy reaches ``train_accuracy_target``). At its last epoch, once, on the round's final weights:

    1. evaluate on the validation and test splits (every rank its shard, gathered);
    2. predict the stop set and measure the stopping criteria (:mod:`alvae_pl.stopping`, history columns
       ``stop_*``); a rule of ``stopping`` that holds makes this round the last (no acquisition follows);
    3. log ``al/*`` scalars to every logger (TensorBoard, CSV, ...) with the number of labels as the step, and rewrite
       ``history.csv`` in the run folder;
    4. select ``budget`` unlabeled pool images with ``heuristic`` (embedding sharded over ranks, selection on
       rank zero, broadcast), have ``oracle`` label them, and rewrite ``labeled.csv``;
    5. reset the task model to its round-0 weights and build a fresh optimizer.

    The simulated oracle answers at once. A human one (:class:`~alvae_pl.oracles.HumanOracle`) may not have
    answered yet: the loop then keeps the query in its state, stops the run after the checkpoint, and asks
    the oracle again when the run is continued (``on_fit_start``), before the next round trains.

    What it needs from the Trainer is declared, never overwritten: ``reload_dataloaders_every_n_epochs=1`` (the
    next round sees the new labels through a fresh loader, and each epoch's shuffle stays a function of (seed,
    epoch); cheap for in-memory tensors), a ``max_epochs`` that leaves room for the schedule (the loop stops the
    run itself after the last round; Lightning's default 1000 does), and no per-epoch validation unless
    ``validate_every_epoch``. ``train.py`` fills in what the user left unset; ``setup`` checks the Trainer and
    refuses a conflicting setting in one line.

    Hooks: ``setup`` checks the Trainer and the schedule; ``on_train_epoch_start`` tells the model where it is
    in the round; ``on_train_epoch_end`` does the work above. It runs before ``RunCheckpoint`` (Lightning runs
    checkpoint callbacks last), so ``last.ckpt`` always holds the state after the epoch's acquisition, and a run
    resumed with ``--ckpt_path last`` repeats nothing and skips nothing. The loop's state (round, history,
    selection scores) lives in ``state_dict``; the pool lives in the DataModule's.

    A run may also start with no labels at all (a cold start): ``start`` then chooses the first
    ``data.initial_labels`` images before any task model exists, on task-agnostic features (TypiClust, ProbCover,
    k-center on an encoder's features), in ``on_fit_start``; the oracle labels them as round 0's labels (a human one
    gets ``query_round_0.csv`` and its contact sheet, and the run waits for the answers like any other round).

    Args:
        heuristic: how to choose images (random, entropy, core-set, MedAL, learning loss...).
        start: how to choose the initial labels when the pool has none: a heuristic that needs no task model (its
            features task-agnostic alone, ``task_weight: 0``, or random sampling). ``None`` (default): the
            ``data.initial_labels`` drawn at random by ``data.pool_seed`` (the paper's start), or the images a lab's
            labels file names. Its random choices are seeded by ``data.pool_seed``, so every heuristic compared under
            one pool seed starts from the same images.
        oracle: who labels the picks: ``None`` reveals the data set's labels (the paper's simulation); a
            :class:`~alvae_pl.oracles.HumanOracle` asks an expert through files in the run folder.
        budget: images labeled per round (paper: 3,000).
        max_labels: stop once this many images are labeled and trained on; ``None``: until the pool is used up.
        epochs_first: epochs of the first round (paper: 10).
        epochs_increment: extra epochs for each later round (paper: 5).
        train_accuracy_target: end a round early once the epoch's train accuracy reaches this (paper: 0.99).
        seed: seeds each round's random choices together with the round number.
        evaluate_test: also evaluate on the test split each round (the validation split always is).
        validate_every_epoch: keep Lightning's per-epoch validation; off by default, since on small rounds
            it costs more than training, and every round ends with an evaluation anyway. Off needs a Trainer built
            with ``limit_val_batches=0`` and ``num_sanity_val_steps=0``, which ``train.py`` fills in when unset.
        recompute_batch_norm: at each round's end, before evaluation and acquisition, recompute the task
            model's batch-norm statistics on the labeled images (``TaskModel.recompute_batch_norm``). Off in the
            paper's recipe. Rounds of a few dozen steps (the digits demo) leave the running statistics (momentum
            0.1) behind the weights, and the model then evaluates near chance although it fits its training
            batches; with this on, evaluation and selection see what the weights learned.
        stopping: rules that end the run before ``max_labels`` (:mod:`alvae_pl.stopping`), e.g.
            ``[{class_path: StabilizingPredictions, init_args: {kappa: 0.99, rounds: 3}}]``; the first that holds
            ends it after the round's evaluation, its reason in ``run_status.json`` and the closing line. Empty
            (default): the criteria are measured (history columns ``stop_*``) but never stop the run.
        stop_set_size: images of the unlabeled pool the stopping criteria predict on every round
            (:class:`~alvae_pl.stopping.StopMeasures`); 0 measures none of ``stop_kappa`` and ``stop_*_uncertainty``.
    """

    def __init__(
        self,
        heuristic: Heuristic | None = None,
        oracle: Oracle | None = None,
        budget: int = 3000,
        max_labels: int | None = None,
        epochs_first: int = 10,
        epochs_increment: int = 5,
        train_accuracy_target: float | None = None,
        seed: int = 0,
        evaluate_test: bool = True,
        validate_every_epoch: bool = False,
        recompute_batch_norm: bool = False,
        start: Heuristic | None = None,
        stopping: list[StoppingRule] | None = None,
        stop_set_size: int = 1000,
    ) -> None:
        if budget < 1:
            raise ValueError(f"active.budget must be at least 1, got {budget}")
        if epochs_first < 1 or epochs_increment < 0:
            raise ValueError("active.epochs_first must be >= 1 and active.epochs_increment >= 0")
        self.heuristic = heuristic if heuristic is not None else RandomSampling()
        if start is not None and not _needs_no_task_model(start):
            raise ValueError(
                f"active.start chooses the first labels before any task model exists, but {type(start).__name__} reads "
                "the task model: give it task-agnostic features alone (features: {vae: ..., task_weight: 0}) or use "
                "RandomSampling"
            )
        self.start = start
        self.oracle = oracle if oracle is not None else SimulatedOracle()
        self.budget = budget
        self.max_labels = max_labels
        self.epochs_first = epochs_first
        self.epochs_increment = epochs_increment
        self.train_accuracy_target = train_accuracy_target
        self.seed = seed
        self.evaluate_test = evaluate_test
        self.validate_every_epoch = validate_every_epoch
        self.recompute_batch_norm = recompute_batch_norm
        self.stopping = list(stopping or [])
        needs_stop_set = [type(rule).__name__ for rule in self.stopping if rule.uses_stop_set]
        if needs_stop_set and stop_set_size == 0:
            raise ValueError(
                f"active.stopping: {', '.join(needs_stop_set)} predicts on the stop set, but active.stop_set_size is "
                "0: set it to a positive number of images (default 1000)"
            )
        # Checkpointed state.
        self.stop_measures = StopMeasures(stop_set_size, seed)
        #: Why a stopping rule ended the run (``<rule>: <criterion> for <n> rounds at <labels> labels``), else ``None``.
        self.stop_reason: str | None = None
        self.round_index = 0
        self.round_start_epoch = 0
        self.round_train_seconds = 0.0
        #: Epochs of the current round trained so far (0 at a round's start, where corrections may take effect).
        self.round_epochs_done = 0
        self.finished = False
        self.history: list[dict[str, float | int]] = []
        self.scores = torch.empty(0)
        #: Picks the oracle has not answered yet (a human oracle's open query), else ``None``.
        self.pending: Query | None = None
        #: Why this process stopped before the run finished (the oracle's message), else ``None``.
        self.pause_message: str | None = None
        #: The label-aware VAEs' retraining at each round's start (its state is checkpointed with the loop's).
        self.label_aware = LabelAwareRetraining(seed)
        self._epoch_started = 0.0
        self._checkpoint_seconds_seen = 0.0
        self._active = False
        #: The run's checkpoint callbacks, told when a round ends (found in ``setup``).
        self._checkpoints: list[RunCheckpoint] = []
        #: Rounds this process trained (0 for a rerun of a finished run, or a run still waiting for labels).
        self.rounds_this_process = 0

    @property
    def active(self) -> bool:
        """Whether this fit runs rounds of active learning (false for ``data.train_on: pool``)."""
        return self._active

    # ------------------------------------------------------------------------------------------ schedule
    def round_epochs(self, round_index: int) -> int:
        return self.epochs_first + round_index * self.epochs_increment

    def label_schedule(self, pool_size: int, initial_labels: int) -> list[int]:
        """Number of labels trained on in each round, e.g. ``[3000, 6000, ..., 24000, 25000]``."""
        cap = pool_size if self.max_labels is None else self.max_labels
        if cap > pool_size:
            raise ValueError(
                f"active.max_labels={cap} exceeds the pool of {pool_size} images: lower it or raise data.pool_size"
            )
        if cap < initial_labels:
            raise ValueError(
                f"active.max_labels={cap} is below data.initial_labels={initial_labels}: raise it or lower the latter"
            )
        if initial_labels < pool_size and self.budget > pool_size - initial_labels:
            raise ValueError(
                f"active.budget={self.budget} exceeds the {pool_size - initial_labels} unlabeled pool images: "
                "lower active.budget or raise data.pool_size"
            )
        labels = [initial_labels]
        while labels[-1] < cap:
            labels.append(min(labels[-1] + self.budget, cap))
        return labels

    # ----------------------------------------------------------------------------------------- lightning
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if not isinstance(datamodule, ActiveDataModule):
            raise TypeError("ActiveLearningLoop needs an ActiveDataModule")
        # ``trainer.log_dir`` is a collective under DDP: read it here, on every rank, not later on rank zero.
        self._run_folder = Path(trainer.log_dir if trainer.log_dir is not None else trainer.default_root_dir)
        if datamodule.train_on == "labeled" and not isinstance(pl_module, TaskModel):
            raise ValueError(
                f"active learning needs a TaskModel, got {type(pl_module).__name__}: "
                "train other models with data.train_on: pool"
            )
        if datamodule.train_on == "pool":
            rank_zero_info("data.train_on=pool: training on the whole pool, no active learning")
            return
        self._active = True
        self._checkpoints = [c for c in trainer.checkpoint_callbacks if isinstance(c, RunCheckpoint)]
        for checkpoint in self._checkpoints:
            checkpoint.follow_rounds()
        if self.start is not None:
            datamodule.defer_initial_labels()
        self.heuristic.check_model(pl_module)
        self.oracle.check(datamodule)
        schedule = self.label_schedule(len(datamodule.pool), datamodule.num_initial_labels)
        max_epochs = sum(self.round_epochs(r) for r in range(len(schedule)))
        self.check_trainer(trainer, max_epochs)
        rounds = f"{len(schedule)} round{'s' if len(schedule) > 1 else ''}"
        rank_zero_info(
            f"Active learning: {rounds}, labels {schedule[0]} -> {schedule[-1]}, "
            f"at most {max_epochs} epochs; heuristic {type(self.heuristic).__name__}"
        )
        self._schedule = schedule

    def check_trainer(self, trainer: L.Trainer, epochs: int) -> None:
        """Refuses, in one line, Trainer settings the loop cannot run under (see the class docstring)."""
        if trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                f"trainer.reload_dataloaders_every_n_epochs={trainer.reload_dataloaders_every_n_epochs}: active "
                "learning rebuilds the train loader every epoch from the current labels; set it to 1"
            )
        if trainer.max_epochs is not None and trainer.max_epochs != -1 and trainer.max_epochs < epochs:
            raise ValueError(
                f"trainer.max_epochs={trainer.max_epochs} stops the run before the schedule's {epochs} epochs: "
                f"set it to -1 (the loop ends the run after its last round) or to at least {epochs}"
            )
        validates = trainer.limit_val_batches != 0 or trainer.num_sanity_val_steps != 0
        if validates and not self.validate_every_epoch:
            raise ValueError(
                "the Trainer validates every epoch but active.validate_every_epoch is false: set "
                "trainer.limit_val_batches: 0 and trainer.num_sanity_val_steps: 0, or active.validate_every_epoch: "
                "true"
            )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active:
            return
        self.heuristic.setup(trainer.datamodule.data, pl_module.device)
        self.label_aware.attach(self.heuristic, pl_module)
        datamodule: ActiveDataModule = trainer.datamodule
        if self.start is not None and datamodule.pool.num_labeled == 0 and self.pending is None:
            self._choose_initial_labels(trainer, pl_module)
            return
        # Continuing a run that waited for labels: the checkpoint (restored by now) holds the open query. Asked
        # here, before the first train loader of this process is built, so that the round trains on the answers,
        # and on the expert's corrections of earlier labels.
        settled = self.pending is not None and self._settle(trainer)
        corrected = 0
        if self.history:  # a continued run: what the expert changed since
            warn_of_edited_queries(trainer, self._run_folder, self.round_index - (self.pending is not None))
            corrected = self._correct(trainer) if self.pending is None else 0  # waiting: read with the answers
        if settled or corrected:
            self.write_records(trainer)

    def _correct(self, trainer: L.Trainer) -> int:
        """The expert's corrections (:func:`~alvae_pl.callbacks.correction_step.apply_corrections`) for the round this
        continued run trains next; held back, with a warning, where they cannot take effect now."""
        held_back = None
        if self.finished:
            held_back = "the run has finished"
        elif not self.oracle.takes_corrections:
            held_back = f"{type(self.oracle).__name__} takes no corrections"
        elif self.round_epochs_done:
            held_back = (
                f"the run resumed in the middle of round {self.round_index}; they take effect when it is continued "
                "after that round"
            )
        return apply_corrections(trainer, self._run_folder, self.round_index, held_back)

    def _choose_initial_labels(self, trainer: L.Trainer, model: TaskModel) -> None:
        """A cold start: ``start`` picks the first images, the oracle labels them as round 0's labels. A human oracle
        that has not answered yet leaves the query open: the run checkpoints it and stops before training."""
        datamodule: ActiveDataModule = trainer.datamodule
        self.start.setup(datamodule.data, model.device)
        generator = torch.Generator().manual_seed(derive_seed(datamodule.pool_seed, START_STREAM, 1))
        rank_zero_info(
            f"Choosing the first {datamodule.planned_initial_labels} labels with {type(self.start).__name__}"
        )
        self.pending = acquire(trainer, model, self.start, datamodule.planned_initial_labels, generator, round_index=0)
        if not self._settle(trainer, pause_on_error=True):
            self.write_records(trainer)
            for checkpoint in self._checkpoints:  # the open query, so that the answers meet the very images asked
                checkpoint.save_now(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resumed from the checkpoint of a finished run, or still waiting for labels: nothing to train.
        if self._active and (self.finished or self.pending is not None):
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: TaskModel) -> None:
        if not self._active:
            return
        if trainer.current_epoch == self.round_start_epoch:
            # At a round's start (its labels are those it ends with), so that the loss head trains, and
            # acquisition measures, with the same V(u).
            self.label_aware.at_round_start(trainer, pl_module.device, self.round_index)
        self._epoch_started = time.perf_counter()
        epoch_in_round = trainer.current_epoch - self.round_start_epoch
        pl_module.set_round_progress(epoch_in_round, self.round_epochs(self.round_index))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: TaskModel) -> None:
        if not self._active:
            return
        # Summed on the device during the epoch, read once here (a collective under DDP: every rank calls it).
        # Reading it waits for the epoch's last GPU kernels, so the clock below measures the whole epoch.
        train_accuracy = pl_module.train_epoch_metrics().get("train/accuracy", math.nan)
        self.round_train_seconds += time.perf_counter() - self._epoch_started
        epochs_done = trainer.current_epoch - self.round_start_epoch + 1
        self.round_epochs_done = epochs_done
        reached = self.train_accuracy_target is not None and train_accuracy >= self.train_accuracy_target
        if epochs_done < self.round_epochs(self.round_index) and not reached:
            return
        self._finish_round(trainer, pl_module, epochs_done, train_accuracy)

    # ----------------------------------------------------------------------------------------- a round
    def _finish_round(self, trainer: L.Trainer, model: TaskModel, epochs: int, train_accuracy: float) -> None:
        datamodule: ActiveDataModule = trainer.datamodule
        pool = datamodule.pool
        row: dict[str, Any] = {
            "round": self.round_index,
            "labels": pool.num_labeled,
            "epochs": epochs,
            "train_accuracy": train_accuracy,
            "train_seconds": self.round_train_seconds,
            **self.label_aware.round_columns(),
        }
        splits = ["val", "test"] if self.evaluate_test else ["val"]
        splits = [name for name in splits if len(getattr(datamodule.data, name))]  # a lab may have no test images
        started = time.perf_counter()
        if self.recompute_batch_norm:
            recompute_batch_norm_on_labeled(trainer, model, datamodule)
        row.update(evaluate_splits(trainer, model, datamodule, splits))
        row["eval_seconds"] = time.perf_counter() - started
        row.update(self.stop_measures.measure(trainer, model, [*self.history, row]))
        # Checkpoints written since the previous row: this round's epochs and the previous round's last epoch.
        checkpoint_seconds = getattr(trainer.checkpoint_callback, "save_seconds", 0.0)
        row["checkpoint_seconds"] = checkpoint_seconds - self._checkpoint_seconds_seen
        self._checkpoint_seconds_seen = checkpoint_seconds

        last_round = self.round_index + 1 >= len(self._schedule) or pool.num_unlabeled == 0
        if not last_round and self.stopping:
            stop = first_stop(self.stopping, rows_to_columns([*self.history, row]))
            # Rank zero's decision on every rank: ranks that disagreed would hang in the next collective.
            self.stop_reason = trainer.strategy.broadcast(None if stop is None else stop[1], src=0)
            last_round = self.stop_reason is not None
        if not last_round:
            started = time.perf_counter()
            generator = torch.Generator().manual_seed(round_seed(self.seed, self.round_index))
            budget = self._schedule[self.round_index + 1] - pool.num_labeled
            if budget < self.budget:
                limit = "the pool is used up" if budget == pool.num_unlabeled else "active.max_labels is reached"
                rank_zero_warn(f"The last acquisition labels {budget} images instead of {self.budget}: then {limit}.")
            self.pending = acquire(trainer, model, self.heuristic, budget, generator, round_index=self.round_index + 1)
            if self.oracle.shows_predictions:  # e.g. Label Studio's pre-annotations
                self.pending = with_predictions(trainer, model, self.pending)
            # A bad answers file here must not lose the round just trained: it pauses the run like missing answers.
            self._settle(trainer, pause_on_error=True)
            row["acquisition_seconds"] = time.perf_counter() - started
        self.history.append(row)
        self.rounds_this_process += 1
        self.finished = last_round
        self._publish(trainer, row)
        for checkpoint in self._checkpoints:
            checkpoint.round_ended(trainer.current_epoch)
        if last_round:
            trainer.should_stop = True
            return
        if self.pending is not None and trainer.is_global_zero:  # the weights that chose the open query, for predict
            save_round_model(self._run_folder, model, self.round_index, pool.num_labeled)
        model.reset_to_initial_weights()
        trainer.strategy.setup_optimizers(trainer)
        self.round_index += 1
        self.round_start_epoch = trainer.current_epoch + 1
        self.round_train_seconds = 0.0
        self.round_epochs_done = 0
        self.label_aware.next_round()
        if self.pending is not None:  # waiting for the oracle: stop after this epoch's checkpoint
            trainer.should_stop = True

    def _settle(self, trainer: L.Trainer, pause_on_error: bool = False) -> bool:
        """Asks the oracle for the pending query's labels (:func:`~alvae_pl.callbacks.acquisition_step.settle`);
        ``False``, with its message kept for the closing line, if it cannot answer yet."""
        assert self.pending is not None
        answered = settle(trainer, self.oracle, self.pending, self._run_folder, pause_on_error)
        if isinstance(answered, str):
            self.pause_message = answered  # printed last, by the command line, once the run has stopped
            return False
        self.scores = torch.cat([self.scores, answered])
        self.pending = None
        self.pause_message = None
        return True

    def closing_line(self) -> str | None:
        """What the run says last: finished (and where its records are), already finished, or what the expert must
        do; ``None`` for a run without rounds or one that stopped for another reason."""
        if not self._active:
            return None
        if self.pending is not None and self.pause_message is not None:
            return self.pause_message
        if not self.finished or not self.history:
            return None
        return finished_line(self.history, self._run_folder, self.rounds_this_process == 0, self.stop_reason)

    # ------------------------------------------------------------------------------------------ records
    def _publish(self, trainer: L.Trainer, row: dict[str, Any]) -> None:
        """TensorBoard curves against the number of labels, and the two CSV files, from rank zero."""
        if not trainer.is_global_zero:
            return
        summary = ", ".join(
            f"{k} {row[k]:.4f}" for k in HISTORY_COLUMNS if k.startswith(("val_", "test_")) and k in row
        )
        rank_zero_info(f"Round {row['round']} with {row['labels']} labels, {row['epochs']} epochs: {summary}")
        curves = {f"al/{key}": row[key] for key in curve_columns(row) if not math.isnan(row[key])}
        for logger in trainer.loggers:  # every logger, with the number of labels as the step
            logger.log_metrics(curves, step=row["labels"])
            logger.save()
        self.write_records(trainer)

    def write_records(self, trainer: L.Trainer) -> None:
        """Rewrite ``history.csv``, ``labeled.csv`` and ``run_status.json`` whole from the current state (rank
        zero only)."""
        if not trainer.is_global_zero:
            return
        folder = self._run_folder
        write_csv_atomically(folder / HISTORY_FILENAME, history_columns(self.history), self.history)
        pool = trainer.datamodule.pool
        columns, rows = labeled_table(trainer.datamodule, self.scores)
        write_csv_atomically(folder / LABELED_FILENAME, columns, rows)
        status = "finished" if self.finished else "waiting_for_labels" if self.pending is not None else "training"
        stopped = {"stopped_by": self.stop_reason} if self.stop_reason is not None else {}
        write_run_status(folder, status, rounds_done=len(self.history), labels=pool.num_labeled, **stopped)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run without rounds (the VAE) is finished once its fit ends normally (a killed one never gets here).
        if not self._active and trainer.is_global_zero and not trainer.interrupted:
            write_run_status(self._run_folder, "finished", epochs=trainer.current_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "round_index": self.round_index,
            "round_start_epoch": self.round_start_epoch,
            "round_train_seconds": self.round_train_seconds,
            "round_epochs_done": self.round_epochs_done,
            "finished": self.finished,
            "history": [dict(row) for row in self.history],
            "scores": self.scores.clone(),
            "pending": None
            if self.pending is None
            else {
                "round_index": self.pending.round_index,
                "positions": self.pending.positions.clone(),
                "scores": self.pending.scores.clone(),
                "predictions": None if self.pending.predictions is None else self.pending.predictions.clone(),
            },
            **self.label_aware.state_dict(),
            "stop_measures": self.stop_measures.state_dict(),
            "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.round_index = state_dict["round_index"]
        self.round_start_epoch = state_dict["round_start_epoch"]
        self.round_train_seconds = state_dict["round_train_seconds"]
        self.round_epochs_done = state_dict.get("round_epochs_done", 0)  # absent from checkpoints before corrections
        self.finished = state_dict["finished"]
        self.history = [dict(row) for row in state_dict["history"]]
        self.scores = state_dict["scores"].clone()
        pending = state_dict.get("pending")
        self.pending = None if pending is None else Query(**pending)
        self.label_aware.load_state_dict(state_dict)
        if state_dict.get("stop_measures") is not None:  # absent from checkpoints written before the stopping criteria
            self.stop_measures.load_state_dict(state_dict["stop_measures"])
        self.stop_reason = state_dict.get("stop_reason")
