"""Stopping criteria: each rule's stop point on constructed histories, the measures against references written here,
the report's table, and runs through train.py that a rule ends (resumable, DDP-safe)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from alvae_pl.analysis.history import History
from alvae_pl.analysis.stopping import report_rules, stop_row, stopping_markdown, stopping_table
from alvae_pl.stopping import (
    MaxUncertainty,
    MeanUncertainty,
    StabilizingPredictions,
    ValidationPlateau,
    first_stop,
    metric_gains,
    normalized_uncertainty,
    prediction_agreement,
    rows_to_columns,
)
from tests.helpers.cli_runs import REPOSITORY, kill_switch_config, read_csv, train, train_in_process, without_timings

NAN = math.nan
LABELS = [100, 200, 300, 400, 500, 600, 700, 800]


def columns(**values: list[float]) -> dict[str, list[float]]:
    """A constructed history: ``labels`` 100, 200, ... and the given columns."""
    length = len(next(iter(values.values())))
    return {"labels": LABELS[:length], **values}


# ------------------------------------------------------------------------------------------- rules on histories
def test_stabilizing_predictions_needs_successive_rounds_of_agreement() -> None:
    # Rounds 2-3 agree, round 4 breaks the streak, rounds 5-7 are the three successive rounds the rule waits for.
    history = columns(stop_kappa=[NAN, 0.95, 0.992, 0.995, 0.98, 0.991, 0.993, 0.999])
    rule = StabilizingPredictions(kappa=0.99, rounds=3)
    assert rule.stop_round(history) == 7
    assert rule.reason(history, 7) == "StabilizingPredictions: kappa 0.9990 >= 0.99 for 3 rounds at 800 labels"
    assert StabilizingPredictions(kappa=0.99, rounds=2).stop_round(history) == 3
    # A round that was not measured (NaN) breaks a streak too.
    assert StabilizingPredictions(kappa=0.9, rounds=3).stop_round(columns(stop_kappa=[NAN, 0.95, NAN, 0.96])) is None
    assert StabilizingPredictions().stop_round(columns(labels_only=[1.0, 2.0])) is None  # a history without kappa


def test_uncertainty_rules_stop_below_their_threshold() -> None:
    history = columns(stop_max_uncertainty=[0.9, 0.5, 0.29, 0.1], stop_mean_uncertainty=[0.2, 0.04, 0.06, 0.04])
    assert MaxUncertainty(threshold=0.3).stop_round(history) == 2
    assert MaxUncertainty(threshold=0.3, rounds=2).stop_round(history) == 3
    assert MaxUncertainty(threshold=0.05).stop_round(history) is None
    assert MeanUncertainty(threshold=0.05).stop_round(history) == 1
    assert MeanUncertainty(threshold=0.05, rounds=2).stop_round(history) is None  # round 2 breaks it
    assert MeanUncertainty(threshold=0.05).reason(history, 1) == (
        "MeanUncertainty: mean uncertainty 0.0400 <= 0.05 for 1 round at 200 labels"
    )


def test_validation_plateau_counts_rounds_without_a_gain_over_the_best() -> None:
    accuracy = [0.5, 0.7, 0.705, 0.72, 0.715, 0.719]
    # Gains over the best earlier round: -, 0.2, 0.005, 0.015, -0.005, -0.001. With min_delta 0.01, round 2 counts,
    # round 3 (0.015) resets, rounds 4 and 5 are the two successive rounds.
    rule = ValidationPlateau(metric="val_accuracy", min_delta=0.01, rounds=2)
    assert rule.stop_round(columns(val_accuracy=accuracy)) == 5
    assert ValidationPlateau(min_delta=0.0, rounds=2).stop_round(columns(val_accuracy=accuracy)) == 5
    assert ValidationPlateau(min_delta=0.0, rounds=1).stop_round(columns(val_accuracy=accuracy)) == 4
    assert ValidationPlateau(metric="val_auroc").stop_round(columns(val_accuracy=accuracy)) is None
    assert rule.reason(columns(val_accuracy=accuracy), 5) == (
        "ValidationPlateau: val_accuracy gain -0.0010 <= 0.01 for 2 rounds at 600 labels"
    )


def test_metric_gains_are_each_round_against_the_best_before_it() -> None:
    values = [0.3, 0.6, NAN, 0.5, 0.8, 0.79]
    expected = [NAN] + [values[r] - np.nanmax(values[:r]) for r in range(1, len(values))]
    expected[2] = NAN
    assert metric_gains(values) == pytest.approx(expected, nan_ok=True)


def test_first_stop_is_the_earliest_and_the_first_listed_on_a_tie() -> None:
    history = columns(stop_kappa=[NAN, 0.999, 0.999], stop_max_uncertainty=[0.9, 0.1, 0.1])
    kappa, uncertainty = StabilizingPredictions(rounds=1), MaxUncertainty(threshold=0.2)
    assert first_stop([uncertainty, kappa], history) == (1, uncertainty.reason(history, 1))
    assert first_stop([kappa, uncertainty], history) == (1, kappa.reason(history, 1))
    assert first_stop([StabilizingPredictions(rounds=2), uncertainty], history)[0] == 1
    assert first_stop([MaxUncertainty(threshold=0.01)], history) is None
    assert first_stop([], history) is None


def test_history_rows_become_columns_with_missing_cells_as_nan() -> None:
    rows = [{"labels": 60, "val_accuracy": 0.5}, {"labels": 120, "val_accuracy": 0.6, "stop_kappa": 0.9}]
    result = rows_to_columns(rows)
    assert result["labels"] == [60, 120] and result["stop_kappa"][1] == 0.9 and math.isnan(result["stop_kappa"][0])


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (lambda: StabilizingPredictions(kappa=1.5), "kappa must lie in"),
        (lambda: MaxUncertainty(threshold=2.0), "threshold is a normalized entropy"),
        (lambda: ValidationPlateau(min_delta=-0.1), "min_delta must be >= 0"),
        (lambda: MeanUncertainty(rounds=0), "rounds must be at least 1"),
    ],
)
def test_impossible_settings_say_what_to_change(rule, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rule()


# ------------------------------------------------------------------------------------------- the measures
def reference_kappa(a: list[int], b: list[int]) -> float:
    """Cohen's kappa by its definition: (observed agreement - chance agreement) / (1 - chance agreement)."""
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    chance = sum((a.count(c) / n) * (b.count(c) / n) for c in set(a) | set(b))
    return (observed - chance) / (1 - chance)


def test_agreement_is_cohens_kappa_and_flattens_findings() -> None:
    generator = torch.Generator().manual_seed(0)
    previous = torch.randint(0, 4, (200,), generator=generator)
    current = torch.where(torch.rand(200, generator=generator) < 0.7, previous, torch.randint(0, 4, (200,)))
    assert prediction_agreement(previous, current) == pytest.approx(
        reference_kappa(previous.tolist(), current.tolist())
    )
    findings_a = torch.randint(0, 2, (50, 3), generator=generator)
    findings_b = findings_a.clone()
    findings_b[:10, 0] = 1 - findings_b[:10, 0]
    assert prediction_agreement(findings_a, findings_b) == pytest.approx(
        reference_kappa(findings_a.flatten().tolist(), findings_b.flatten().tolist())
    )
    # A model that predicts one class twice agrees perfectly (the formula would divide zero by zero).
    assert prediction_agreement(torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long)) == 1.0
    with pytest.raises(ValueError, match="cannot be compared"):
        prediction_agreement(findings_a, findings_a[:, :2])


def test_uncertainty_is_entropy_scaled_to_one() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, 0.5, -1.0, 0.0], [20.0, -20.0, -20.0, -20.0]])
    expected = [stats.entropy(row) / math.log(4) for row in logits.softmax(dim=1).numpy()]
    assert normalized_uncertainty(logits, multilabel=False).tolist() == pytest.approx(expected, abs=1e-6)
    findings = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    p = findings.sigmoid().numpy()
    expected = [np.mean([stats.entropy([q, 1 - q], base=2) for q in row]) for row in p]
    assert normalized_uncertainty(findings, multilabel=True).tolist() == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------------------------------- the report's table
def test_stop_rows_say_labels_saved_and_metric_lost() -> None:
    history = History(
        {
            "round": np.arange(5),
            "labels": np.array([100, 200, 300, 400, 500]),
            "val_accuracy": np.array([0.5, 0.7, 0.8, 0.81, 0.84]),
            "stop_kappa": np.array([NAN, 0.8, 0.995, 0.996, 0.999]),
        }
    )
    row = stop_row(StabilizingPredictions(kappa=0.99, rounds=2), history, "val_accuracy", "coreset", 3)
    assert (row.stop_round, row.stop_labels, row.final_labels, row.labels_saved) == (3, 400, 500, 100)
    assert (row.metric_at_stop, row.final_metric) == (0.81, 0.84)
    assert row.metric_lost == pytest.approx(0.03)
    never = stop_row(MaxUncertainty(), history, "val_accuracy")
    assert (never.stop_labels, never.labels_saved, never.metric_lost) == (None, 0, 0.0)
    rows = stopping_table({"coreset": {0: history, 1: history}}, report_rules("test_accuracy"), "val_accuracy")
    assert len(rows) == 4 * 2
    assert rows[-1].rule == "ValidationPlateau(metric='val_accuracy', min_delta=0.0, rounds=2)"  # never the test split
    markdown = stopping_markdown(rows)
    assert "| StabilizingPredictions(kappa=0.99, rounds=3) | coreset | 0 | 500 (round 4) | 0 |" in markdown
    assert "| MaxUncertainty(rounds=1, threshold=0.5) | coreset | 1 | not measured | 0 |" in markdown  # no column
    assert "| MaxUncertainty(rounds=1, threshold=0.5) | coreset | 2 | not measured | | | |" in markdown
    assert "| StabilizingPredictions(kappa=0.99, rounds=3) | coreset | 2 | 0 | 0.0 | +0.0000 | +0.0000 |" in markdown
    two = stopping_table({"coreset": {0: history, 1: history}}, [StabilizingPredictions(rounds=2)], "val_accuracy")
    assert "| StabilizingPredictions(kappa=0.99, rounds=2) | coreset | 2 | 2 | 100.0 | +0.0300 | +0.0300 |" in (
        stopping_markdown(two)
    )
    plateau = stop_row(ValidationPlateau(min_delta=0.02, rounds=2), history, "val_accuracy")
    assert (plateau.stop_labels, plateau.measured) == (None, True)  # gains 0.01, then 0.03: not two rounds in a row


def test_the_report_writes_the_stopping_table(tmp_path: Path) -> None:
    from alvae_pl.analysis.report import write_report

    def history(shift: float) -> History:
        return History(
            {
                "round": np.arange(4),
                "labels": np.array([100, 200, 300, 400]),
                "val_accuracy": np.array([0.5, 0.7, 0.69, 0.68]) + shift,
                "stop_kappa": np.array([NAN, 0.9, 0.999, 0.9995]),
            }
        )

    runs = {"a": {0: history(0.0), 1: history(0.01)}, "b": {0: history(0.02), 1: history(0.0)}}
    report = write_report(runs, tmp_path, "a", ["val_accuracy"], tensorboard=False)
    table = (tmp_path / "stopping.md").read_text()
    assert table == report.stopping_markdown and "## Stopping rules" in (tmp_path / "report.md").read_text()
    # The plateau: no gain in rounds 2 and 3 -> stops at 400 labels, nothing saved; kappa >= 0.99 needs 3 rounds.
    csv_rows = read_csv(tmp_path / "stopping.csv")
    plateau = [r for r in csv_rows if r["rule"].startswith("ValidationPlateau")]
    assert [(r["variant"], r["stop_labels"], r["labels_saved"]) for r in plateau] == [
        ("a", "400", "0"),
        ("a", "400", "0"),
        ("b", "400", "0"),
        ("b", "400", "0"),
    ]
    one_round = stop_row(StabilizingPredictions(rounds=2), history(0.0), "val_accuracy")
    assert (one_round.stop_labels, one_round.labels_saved, one_round.metric_lost) == (400, 0, 0.0)


# ------------------------------------------------------------------------------------------- through train.py
#: Every criterion as a rule, by its short class name: the uncertainty rule holds from round 0 (threshold 1), for
#: two rounds by round 1; kappa (defined from round 1) too; first listed wins the tie.
ALL_RULES = """active:
  stopping:
    - class_path: ValidationPlateau
      init_args: {min_delta: 1.0, rounds: 3}
    - class_path: MeanUncertainty
      init_args: {threshold: 0.0}
    - class_path: MaxUncertainty
      init_args: {threshold: 1.0, rounds: 2}
    - class_path: StabilizingPredictions
      init_args: {kappa: -1.0, rounds: 1}
"""


def run_files(run: Path) -> dict[str, bytes]:
    names = ("history.csv", "labeled.csv", "run_status.json", "checkpoints/last.ckpt")
    return {name: (run / name).read_bytes() for name in names}


@pytest.mark.slow
def test_a_rule_ends_the_run_and_a_rerun_has_nothing_to_do(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(ALL_RULES)
    result = train_in_process("digits_random.yaml", tmp_path, "--config", str(rules))  # schedule: 60, 120, 180
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "digits_random" / "seed_0"
    history = read_csv(run / "history.csv")
    assert [row["labels"] for row in history] == ["60", "120"]  # stopped a round before max_labels
    assert history[-1]["acquisition_seconds"] == ""  # and acquired nothing after the stop
    assert len(read_csv(run / "labeled.csv")) == 120
    # The measures: kappa from round 1 on, uncertainties in [0, 1], the validation gain from the metric's own column.
    assert history[0]["stop_kappa"] == "" and -1 <= float(history[1]["stop_kappa"]) <= 1
    for row in history:
        assert 0 <= float(row["stop_mean_uncertainty"]) <= float(row["stop_max_uncertainty"]) <= 1
    gain = float(history[1]["val_accuracy"]) - float(history[0]["val_accuracy"])
    assert history[0]["stop_val_gain"] == "" and float(history[1]["stop_val_gain"]) == pytest.approx(gain, abs=2e-6)
    maximum = float(history[1]["stop_max_uncertainty"])
    reason = f"MaxUncertainty: max uncertainty {maximum:.4f} <= 1 for 2 rounds at 120 labels"
    status = json.loads((run / "run_status.json").read_text())
    assert status == {"status": "finished", "rounds_done": 2, "labels": 120, "stopped_by": reason}
    assert result.stderr.strip().splitlines()[-1].startswith("Finished: 2 rounds, 120 labels")
    assert f"stopped by {reason}" in result.stderr.strip().splitlines()[-1]
    events = EventAccumulator(str(run)).Reload()
    assert [event.step for event in events.Scalars("al/stop_kappa")] == [120]
    assert [event.step for event in events.Scalars("al/stop_max_uncertainty")] == [60, 120]
    # Continued like a finished run: nothing to do, nothing written.
    before = run_files(run)
    again = train_in_process("digits_random.yaml", tmp_path, "--config", str(rules), "--ckpt_path=last")
    assert again.returncode == 0, again.stderr[-3000:]
    last_line = again.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Nothing to do: this run finished earlier (2 rounds, 120 labels; stopped by Max")
    assert run_files(run) == before
    # The rules define the run: continuing it without them is refused, and changes nothing.
    other = train_in_process("digits_random.yaml", tmp_path, "--ckpt_path=last")
    assert other.returncode == 2 and "active.stopping" in other.stderr.strip().splitlines()[-1], other.stderr[-2000:]
    assert run_files(run) == before


def test_a_kappa_rule_without_a_stop_set_is_a_one_line_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(ALL_RULES)
    result = train_in_process("digits_random.yaml", tmp_path, "--config", str(rules), "--active.stop_set_size=0")
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error:") and "active.stop_set_size is 0" in last_line, result.stderr[-2000:]
    assert "MeanUncertainty, MaxUncertainty, StabilizingPredictions" in last_line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "digits_random").exists()


#: Kappa from round 1 on (-1: always holds): the run stops after round 1, which a killed run must reach from a
#: checkpoint that holds round 0's predictions on the stop set.
KAPPA_RULE = "active:\n  stopping:\n    - class_path: StabilizingPredictions\n      init_args: {kappa: -1, rounds: 1}\n"


@pytest.mark.slow
def test_a_killed_run_with_a_rule_resumes_to_the_uninterrupted_records(tmp_path: Path, reference_run) -> None:
    rule = tmp_path / "kappa.yaml"
    rule.write_text(KAPPA_RULE)
    expected = reference_run("digits_random.yaml", "--config", str(rule))
    folder = tmp_path / "killed"
    folder.mkdir()
    # Mid-epoch in round one (epochs 2-4), then while the checkpoint of the stopping epoch is assembled: its
    # records are written, its checkpoint is not.
    for kill in ("{at_step: 6}", "{at_checkpoint_of_epoch: 4}"):
        switch = folder / "kill.yaml"
        switch.write_text(kill_switch_config(kill))
        killed = train("digits_random.yaml", folder, "--config", str(rule), "--config", str(switch), "--ckpt_path=last")
        assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = train("digits_random.yaml", folder, "--config", str(rule), "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    actual = folder / "digits_random" / "seed_0"
    history = read_csv(actual / "history.csv")
    assert [row["labels"] for row in history] == ["60", "120"] and history[1]["stop_kappa"] != ""
    assert without_timings(history) == without_timings(read_csv(expected / "history.csv"))
    assert read_csv(actual / "labeled.csv") == read_csv(expected / "labeled.csv")
    assert json.loads((actual / "run_status.json").read_text()) == json.loads(
        (expected / "run_status.json").read_text()
    )


#: Kappa 0.99 for one round: a frozen model predicts the same every round, so the rule ends the run after round 1.
STABLE_RULE = (
    "active:\n  stopping:\n    - class_path: StabilizingPredictions\n      init_args: {kappa: .99, rounds: 1}\n"
)


STILL = ["--active.max_labels=180", "--active.recompute_batch_norm=false"]


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ddp_measures_and_stops_where_one_process_does(tmp_path: Path) -> None:
    """The stop set predicted in shards over two gloo ranks and gathered: the same measures, the same stop."""
    from tests.test_ddp import FROZEN, assert_ddp_equals_one_process

    rule = tmp_path / "stable.yaml"
    rule.write_text(STABLE_RULE)
    # Three rounds scheduled (60 -> 180), batch-norm statistics left as they are (recomputed on the labeled images, they
    # would change the frozen model's predictions); the helper checks that both runs ended at 120 labels with equal
    # picks and metrics.
    assert_ddp_equals_one_process(tmp_path, "digits_random.yaml", [*FROZEN, *STILL, "--config", str(rule)])
    one, two = (tmp_path / kind / "digits_random" / "seed_0" for kind in ("single", "ddp"))
    for row_one, row_two in zip(read_csv(one / "history.csv"), read_csv(two / "history.csv"), strict=True):
        for key in ("stop_kappa", "stop_max_uncertainty", "stop_mean_uncertainty", "stop_val_gain"):
            assert (row_one[key] == "") == (row_two[key] == ""), key
            if row_one[key]:
                assert float(row_two[key]) == pytest.approx(float(row_one[key]), abs=1e-5), key
    status = json.loads((two / "run_status.json").read_text())
    assert status == json.loads((one / "run_status.json").read_text())
    assert status["stopped_by"] == "StabilizingPredictions: kappa 1.0000 >= 0.99 for 1 round at 120 labels"


@pytest.mark.parametrize("overlay", sorted(p.name for p in (REPOSITORY / "configs" / "stopping").glob("*.yaml")))
def test_the_stopping_overlays_configure_their_rules(overlay: str, capsys: pytest.CaptureFixture[str]) -> None:
    from alvae_pl.cli import main

    arguments = ["fit", "--config", "configs/mnist_coreset.yaml", "--config", f"configs/stopping/{overlay}"]
    with pytest.raises(SystemExit) as exit_:
        main([*arguments, "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    rules = printed["active"]["stopping"]
    written = yaml.safe_load((REPOSITORY / "configs" / "stopping" / overlay).read_text())["active"]["stopping"]
    assert [rule["class_path"] for rule in rules] == [rule["class_path"] for rule in written]
    for rule, settings in zip(rules, written, strict=True):
        assert {key: rule["init_args"][key] for key in settings["init_args"]} == settings["init_args"]
