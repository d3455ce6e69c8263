"""An expert corrects earlier answers: corrections.csv is read when a run continues, takes effect from the next round's
training, is recorded and survives a kill; bad corrections and edited answered query files are never silent."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alvae_pl.cli import main
from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.data.digits_folder import FINDINGS, write_digits_folder
from alvae_pl.data.label_pool import LabelOrigin, LabelPool, origin_text
from alvae_pl.data.sources import FolderSource
from alvae_pl.oracles.corrections import edited_query_rows, read_corrections
from tests.helpers.cli_runs import REPOSITORY, kill_switch_config, read_csv, without_timings
from tests.test_human_oracle import _arguments, _fill_in_place

CLASSES = [str(digit) for digit in range(10)]


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _other_class(label: str) -> str:
    return CLASSES[(CLASSES.index(label) + 1) % 10]


def _digest(paths: list[Path]) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def _run_files(run: Path) -> dict[str, str]:
    """Every file of the run folder but TensorBoard's, by content."""
    return _digest([p for p in sorted(run.rglob("*")) if p.is_file() and "events.out" not in p.name])


def _datamodule(lab: Path) -> ActiveDataModule:
    source = FolderSource(
        str(lab / "images"), str(lab / "labels.csv"), str(lab / "val.csv"), val_images=str(lab / "val")
    )
    return ActiveDataModule(source)


# --------------------------------------------------------------------------------------------- the pieces
def test_a_pool_records_corrections_by_round_and_restores_them() -> None:
    pool = LabelPool(train_size=50, pool_size=40, initial_labels=4, pool_seed=0)
    asked = pool.unlabeled[:3]
    pool.label(asked, round_index=1)
    first = pool.labeled[0]
    pool.correct(torch.stack([first, asked[1]]), round_index=2)

    texts = [origin_text(o, r) for o, r in zip(pool.labeled_origins.tolist(), pool.origin_rounds.tolist(), strict=True)]
    assert texts == ["correction in round 2", *["random draw"] * 3, "answer to round 1", "correction in round 2",
                     "answer to round 1"]  # fmt: skip
    assert pool.labeled_rounds.tolist() == [0, 0, 0, 0, 1, 1, 1]  # the round an image was labeled in stays
    assert int(LabelOrigin.CORRECTION) == 3  # appended: a checkpoint's earlier codes keep their meaning

    restored = LabelPool(train_size=50, pool_size=40, initial_labels=4, pool_seed=0)
    restored.load_state_dict(pool.state_dict())
    assert torch.equal(restored.origin_rounds, pool.origin_rounds)
    assert torch.equal(restored.labeled_origins, pool.labeled_origins)
    with pytest.raises(ValueError, match="are not labeled"):
        pool.correct(pool.unlabeled[:1], round_index=2)


def test_corrections_are_read_checked_and_restored_with_the_datamodule(tmp_path: Path) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    datamodule = _datamodule(lab)
    files, labeled = datamodule.pool_files, datamodule.pool.labeled
    truth = {row["file"]: row["label"] for row in read_csv(lab / "answer_key.csv")}
    a, b, c = (files[p] for p in labeled[:3].tolist())
    unlabeled = files[int(datamodule.pool.unlabeled[0])]
    path = tmp_path / "corrections.csv"

    # Rows copied from labeled.csv as they are; one repeats the label the run holds (changes nothing, no error).
    _write(path, ["round", "pool_index", "file", "label", "origin"],
           [[0, 0, a, _other_class(truth[a]), "labels file"], [0, 1, b, truth[b], "labels file"],
            [0, 2, c, _other_class(_other_class(truth[c])), ""]])  # fmt: skip
    found = read_corrections(path, datamodule)
    assert [files[p] for p in found.positions.tolist()] == [a, c]
    assert found.targets.tolist() == [int(_other_class(truth[a])), int(_other_class(_other_class(truth[c])))]

    _write(path, ["file", "label"], [])
    assert len(read_corrections(path, datamodule).positions) == 0  # just a header
    for rows, message in [
        ([[a, "seven"]], f"{path} line 2: unknown class 'seven' for {a}"),
        ([[a, "1"], [b, "2"], [a, "3"]], f"{path} line 4: {a} is already in line 2; keep one row per image"),
        ([[a, "1"], [unlabeled, "2"]], f"{path} line 3: {unlabeled} has no label yet (it is not in labeled.csv)"),
        ([["nowhere.png", "2"]], f"{path} line 2: nowhere.png is not an image of this run's pool; delete the row"),
        ([[a, ""]], f"{path} line 2: {a} has no label; fill it in or delete the row"),
    ]:
        _write(path, ["file", "label"], rows)
        with pytest.raises(ValueError) as refused:
            read_corrections(path, datamodule)
        assert str(refused.value).startswith(message) and "\n" not in str(refused.value)

    # Applied, checkpointed, restored: the labels-file image keeps its corrected label although the labels file,
    # reloaded on resume, still holds the old one (and that is not mistaken for an edited labels file).
    datamodule.correct(found.positions, found.targets)
    datamodule.pool.correct(found.positions, round_index=1)
    datamodule.correct(found.positions[:1], torch.tensor([int(truth[a])]))  # corrected back later
    state = datamodule.state_dict()
    resumed = _datamodule(lab)
    resumed.load_state_dict(state)
    expected = datamodule.pool_targets(labeled[:3])
    assert expected.tolist() == [int(truth[a]), int(truth[b]), int(_other_class(_other_class(truth[c])))]
    assert torch.equal(resumed.pool_targets(labeled[:3]), expected)
    assert torch.equal(resumed.pool.origin_rounds, datamodule.pool.origin_rounds)


def test_multilabel_corrections_take_0_1_findings(tmp_path: Path) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30, findings=True)
    datamodule = _datamodule(lab)
    position = int(datamodule.pool.labeled[0])
    held = datamodule.pool_targets(torch.tensor([position]))[0]
    flipped = (1 - held).tolist()
    path = tmp_path / "corrections.csv"
    _write(path, ["file", *FINDINGS], [[datamodule.pool_files[position], *flipped]])
    found = read_corrections(path, datamodule)
    assert found.positions.tolist() == [position] and found.targets.tolist() == [flipped]
    _write(path, ["file", *FINDINGS], [[datamodule.pool_files[position], 2, *flipped[1:]]])
    with pytest.raises(ValueError, match=rf"line 2: finding {next(iter(FINDINGS))} of .* is '2'; write 1"):
        read_corrections(path, datamodule)


def test_an_edited_answered_query_file_is_found(tmp_path: Path) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    datamodule = _datamodule(lab)
    files, pool = datamodule.pool_files, datamodule.pool
    truth = {row["file"]: row["label"] for row in read_csv(lab / "answer_key.csv")}
    asked = pool.unlabeled[:4]
    datamodule.reveal(asked, torch.tensor([int(truth[files[p]]) for p in asked.tolist()]))
    pool.label(asked, round_index=1)
    names = [files[p] for p in asked.tolist()]
    rows = [[1, 0, names[0], truth[names[0]]], [2, 0, names[1], ""], [3, 0, names[2], truth[names[2]]]]
    rows.append([4, 0, names[3], truth[names[3]]])
    query = tmp_path / "query_round_1.csv"
    _write(query, ["rank", "pool_index", "file", "label"], rows)
    assert edited_query_rows(tmp_path, datamodule, last_round=1) == []  # as answered; a blank row is no edit

    rows[0][3], rows[2][3] = _other_class(rows[0][3]), _other_class(rows[2][3])
    _write(query, ["rank", "pool_index", "file", "label"], rows)
    assert edited_query_rows(tmp_path, datamodule, last_round=1) == [(query, 2)]
    assert edited_query_rows(tmp_path, datamodule, last_round=0) == []  # a query not answered yet is read anyway
    pool.correct(asked[:1], round_index=2)  # corrected since: the corrections file speaks for that image
    assert edited_query_rows(tmp_path, datamodule, last_round=1) == [(query, 1)]


# ------------------------------------------------------------------------------------------ whole runs
def test_a_correction_takes_effect_in_the_next_round_and_bad_ones_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    key = lab / "answer_key.csv"
    truth = {row["file"]: row["label"] for row in read_csv(key)}
    run = tmp_path / "human" / "lab_digits" / "run"
    human = _arguments(lab, tmp_path / "human", "--active.heuristic=Margin")
    main(human)  # round 0 trains, query 1 goes out
    query = run / "query_round_1.csv"
    _fill_in_place(query, key)
    initial = [row["file"] for row in read_csv(run / "labeled.csv")]
    answered = [row["file"] for row in read_csv(query)]
    corrections = run / "corrections.csv"

    # Bad corrections: a one-line error naming the line; the answers are not taken either, not a byte changes.
    unasked = next(name for name in truth if name not in initial and name not in answered)
    for rows, message in [
        ([[initial[0], "seven"]], f"error: {corrections} line 2: unknown class 'seven'"),
        ([[initial[0], "1"], [unasked, "2"]], f"error: {corrections} line 3: {unasked} has no label yet"),
        ([[initial[0], "1"], [initial[0], "2"]], f"error: {corrections} line 3: {initial[0]} is already in line 2"),
    ]:
        _write(corrections, ["file", "label"], rows)
        before = _run_files(run)
        with pytest.raises(SystemExit) as stopped:
            main(human)
        assert stopped.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(message)
        assert _run_files(run) == before

    # One initial label and one answer just given corrected, one row repeating a held label: round 1 trains on them.
    fixed = {initial[3]: _other_class(truth[initial[3]]), answered[2]: _other_class(truth[answered[2]])}
    _write(corrections, ["file", "label"], [[initial[3], fixed[initial[3]]], [initial[5], truth[initial[5]]],
                                            [answered[2], fixed[answered[2]]]])  # fmt: skip
    written = _digest([corrections, query])
    main(human)
    assert "Round 2 waits for labels" in capsys.readouterr().err
    labeled = {row["file"]: row for row in read_csv(run / "labeled.csv")}
    for name, row in labeled.items():
        assert row["label"] == fixed.get(name, truth[name])
        origin = "labels file" if name in initial else "answer to round 1"
        assert row["origin"] == ("correction in round 1" if name in fixed else origin)
    assert labeled[answered[2]]["round"] == "1" and labeled[initial[3]]["round"] == "0"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint["ActiveDataModule"]
    pool_files = _datamodule(lab).pool_files
    assert {pool_files[p]: str(t) for p, t in zip(*(state[k].tolist() for k in ("corrected_positions",
            "corrected_targets")), strict=True)} == fixed  # fmt: skip
    assert _digest([corrections, query]) == written  # the run reads them, never rewrites them

    # Waiting for round 2's answers: an edited answered query file is reported (and not read); a new correction
    # waits for the answers, to take effect with them.
    rows = read_csv(query)
    rows[0]["label"] = _other_class(rows[0]["label"])
    with open(query, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _write(corrections, ["file", "label"], [[initial[7], _other_class(truth[initial[7]])]])
    before = _digest([run / "labeled.csv", run / "checkpoints" / "last.ckpt"])
    with pytest.warns(UserWarning) as warned:
        main(human)
    messages = [str(w.message) for w in warned if str(w.message).startswith(str(run))]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert messages[0].startswith(f"{query} was answered already and is not read again, but 1 of its rows now differ")
    assert messages[0].endswith(f"write its file and new label to {corrections}")
    assert "Round 2 waits for labels" in capsys.readouterr().err
    assert _digest([run / "labeled.csv", run / "checkpoints" / "last.ckpt"]) == before


@pytest.mark.slow
def test_a_killed_continuation_resumes_to_the_same_corrected_records_and_never_reapplies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    key = lab / "answer_key.csv"
    truth = {row["file"]: row["label"] for row in read_csv(key)}
    run = tmp_path / "human" / "lab_digits" / "run"
    # Rounds of 1, 2 and 3 epochs, a checkpoint after every epoch: round 1 can be killed in its middle.
    schedule = ["--active.max_labels=90", "--active.epochs_increment=1", "--checkpoint.min_interval=0"]
    human = _arguments(lab, tmp_path / "human", "--active.heuristic=Margin", *schedule)
    main(human)
    _fill_in_place(run / "query_round_1.csv", key)
    initial = [row["file"] for row in read_csv(run / "labeled.csv")]
    fixed = {initial[0]: _other_class(truth[initial[0]])}
    corrections = run / "corrections.csv"
    _write(corrections, ["file", "label"], [[initial[0], fixed[initial[0]]]])

    def killed_at_checkpoint_of_epoch(epoch: int) -> None:
        switch = tmp_path / "kill.yaml"
        switch.write_text(kill_switch_config(f"{{at_checkpoint_of_epoch: {epoch}}}"))
        environment = dict(os.environ, PYTHONPATH=str(REPOSITORY))
        command = [sys.executable, str(REPOSITORY / "train.py"), *human, "--config", str(switch)]
        killed = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600)
        assert killed.returncode == -9, killed.stderr[-3000:]

    # Killed after the correction was applied, before any checkpoint held it: last.ckpt is still the paused one.
    killed_at_checkpoint_of_epoch(1)
    assert read_csv(run / "labeled.csv")[0]["label"] == fixed[initial[0]]  # written when it was applied
    # Continued, and killed again at round 1's end: its records are written, last.ckpt is of round 1's first epoch.
    killed_at_checkpoint_of_epoch(2)
    records = {name: without_timings(read_csv(run / name)) for name in ("labeled.csv", "history.csv")}
    assert records["labeled.csv"][0]["label"] == fixed[initial[0]]
    assert [row["labels"] for row in records["history.csv"]] == ["30", "60"]

    # A new correction while the run is in the middle of round 1: held back, with a warning, until round 2.
    fixed[initial[1]] = _other_class(truth[initial[1]])
    _write(corrections, ["file", "label"], [[name, label] for name, label in fixed.items()])
    with pytest.warns(UserWarning, match="corrections of 1 label are not applied now: the run resumed in the middle"):
        main(human)  # resumed mid-round: the same answers and correction, applied once, give the same records
    assert {name: without_timings(read_csv(run / name)) for name in records} == records
    assert "Round 2 waits for labels" in capsys.readouterr().err
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["ActiveDataModule"]
    assert len(state["corrected_positions"]) == 1

    _fill_in_place(run / "query_round_2.csv", key)
    written = _digest([corrections, *sorted(run.glob("query_round_*.csv"))])
    main(human)  # round 2 trains on both corrections; the first is kept, not applied again (still "in round 1")
    labeled = read_csv(run / "labeled.csv")
    assert [row["label"] for row in labeled] == [fixed.get(row["file"], truth[row["file"]]) for row in labeled]
    assert [row["origin"] for row in labeled[:3]] == ["correction in round 1", "correction in round 2", "labels file"]
    assert [row["labels"] for row in read_csv(run / "history.csv")] == ["30", "60", "90"]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["ActiveDataModule"]
    assert len(state["corrected_positions"]) == 2
    assert _digest([corrections, *sorted(run.glob("query_round_*.csv"))]) == written


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.timeout(600)
def test_under_ddp_every_rank_trains_on_the_corrections(tmp_path: Path) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    key = lab / "answer_key.csv"
    truth = {row["file"]: row["label"] for row in read_csv(key)}
    run = tmp_path / "human" / "lab_digits" / "run"
    human = _arguments(lab, tmp_path / "human", "--active.heuristic=Margin", "--active.max_labels=60")
    main(human)  # round 0 in this process; round 1 continues under DDP
    _fill_in_place(run / "query_round_1.csv", key)
    initial = [row["file"] for row in read_csv(run / "labeled.csv")]
    fixed = {name: _other_class(truth[name]) for name in initial[:2]}
    _write(run / "corrections.csv", ["file", "label"], [[name, label] for name, label in fixed.items()])

    probe = tmp_path / "probe.yaml"
    probe.write_text(
        "trainer:\n  callbacks:\n    - class_path: tests.helpers.target_probe.TargetProbe\n"
        f"      init_args: {{folder: {tmp_path / 'served'}}}\n"
    )
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", "--config", str(probe)]
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    command = [sys.executable, str(REPOSITORY / "train.py"), *human, *ddp]
    done = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    served = [json.loads((tmp_path / "served" / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert served[0] == served[1] and len(served[0]) == 60
    assert {name: str(served[0][name]) for name in fixed} == fixed
    labeled = {row["file"]: row for row in read_csv(run / "labeled.csv")}
    assert all(labeled[name]["label"] == label and labeled[name]["origin"] == "correction in round 1"
               for name, label in fixed.items())  # fmt: skip
