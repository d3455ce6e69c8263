"""A human in the loop: the run asks, stops, takes the answers back, and ends where the simulation ends."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from alvae_pl.cli import main
from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.data.digits_folder import FINDINGS, write_digits_folder
from alvae_pl.data.sources import FolderSource
from alvae_pl.oracles import HumanOracle, Query
from alvae_pl.oracles.answer_key import answer_from_key
from alvae_pl.run_status import read_run_status
from tests.helpers.cli_runs import TINY, read_csv, without_timings

# Three rounds (30 -> 60 -> 90 labels), one epoch each: two queries for the expert.
SHORT = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--active.max_labels=90",
    "--active.epochs_first=1",
    "--active.epochs_increment=0",
]


def _arguments(lab: Path, logs: Path, *extra: str) -> list[str]:
    source = "--data.source.init_args."
    return [
        "fit",
        "--config",
        "configs/lab_digits.yaml",
        *TINY,
        f"{source}images={lab / 'images'}",
        f"{source}labels={lab / 'labels.csv'}",
        f"{source}val_labels={lab / 'val.csv'}",
        f"{source}val_images={lab / 'val'}",
        f"{source}test_labels={lab / 'test.csv'}",
        f"{source}test_images={lab / 'test'}",
        f"--trainer.logger.init_args.save_dir={logs}",
        *SHORT,
        *extra,
    ]


def _simulated(lab: Path, logs: Path, *extra: str) -> Path:
    """The same experiment with every label known and revealed at once: the paper's simulation."""
    everything_known = f"--data.source.init_args.labels={lab / 'answer_key.csv'}"
    simulation = ["--data.initial_labels=30", "--active.oracle=alvae_pl.oracles.SimulatedOracle", "--ckpt_path=null"]
    main([*_arguments(lab, logs, *extra), everything_known, *simulation])
    return logs / "lab_digits" / "run"


def _same_labels(human: list[dict[str, str]], simulated: list[dict[str, str]]) -> bool:
    """The guarantee a lab's run keeps: the same images, rounds, scores and labels as the simulation's, and the same
    origins but for the initial labels (the lab's labels file; the simulation draws the same images at random)."""
    initial = {"0": ("labels file", "random draw")}
    origins = [(h["origin"], s["origin"]) for h, s in zip(human, simulated, strict=True)]
    expected = [initial.get(h["round"], (f"answer to round {h['round']}",) * 2) for h in human]

    def rest(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in row.items() if k != "origin"} for row in rows]

    return origins == expected and rest(human) == rest(simulated)


def _checksums(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "events.out" not in path.name
    }


def _fill_in_place(query: Path, key: Path, count: int | None = None, wrong_class_at: int | None = None) -> None:
    """The expert fills the query file's label column (the first ``count`` rows, the others left empty) in place,
    as in a spreadsheet."""
    truth = {row["file"]: row["label"] for row in read_csv(key)}
    rows = read_csv(query)
    for number, row in enumerate(rows):
        answered = count is None or number < count
        row["label"] = "seven" if number == wrong_class_at else truth[row["file"]] if answered else ""
    with open(query, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_expert_answers_reproduce_the_simulation_and_mistakes_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    key = lab / "answer_key.csv"
    simulated = _simulated(lab, tmp_path / "simulated", "--active.heuristic=Margin")
    run = tmp_path / "human" / "lab_digits" / "run"
    human = _arguments(lab, tmp_path / "human", "--active.heuristic=Margin")

    main(human)  # round 0 trains, the first query goes out, the run stops
    query = run / "query_round_1.csv"
    assert "Round 1 waits for labels: 30 of 30 images" in capsys.readouterr().err
    asked = read_csv(query)
    assert [row["rank"] for row in asked] == [str(i) for i in range(1, 31)] and all(r["label"] == "" for r in asked)
    with Image.open(run / "query_round_1.png") as sheet:
        assert sheet.width > 10 * 28 and sheet.height > 3 * 28  # 30 tiles, 10 per row
    history = read_csv(run / "history.csv")
    assert [row["labels"] for row in history] == ["30"]
    assert read_run_status(run) == "waiting_for_labels"

    # A wrong class name: a one-line error, and not a byte of the run changes.
    _fill_in_place(query, key, wrong_class_at=4)
    before = _checksums(run)
    with pytest.raises(SystemExit) as stopped:
        main(human)
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: {query} line 6: unknown class 'seven'")
    assert _checksums(run) == before

    # Half the answers, and the oracle waits: nothing is labeled, nothing rewritten.
    _fill_in_place(query, key, count=15)
    before = _checksums(run)
    main(human)
    assert "15 of 30 images" in capsys.readouterr().err and _checksums(run) == before

    _fill_in_place(query, key)  # the whole query, in place
    main(human)
    answers = tmp_path / "answers_round_2.csv"  # the second query answered in a file of its own
    answer_from_key(key, run / "query_round_2.csv", answers)
    main([*human, f"--labels={answers}"])
    # One record per distinct invocation, none rewritten: the start (and its plain continuations), then --labels.
    assert sorted(p.name for p in run.glob("config*.yaml")) == ["config.yaml", "config_2.yaml"]
    assert "labels: null" in (run / "config.yaml").read_text() and str(answers) in (run / "config_2.yaml").read_text()

    labeled = read_csv(run / "labeled.csv")
    assert list(labeled[0]) == ["round", "pool_index", "dataset_index", "score", "file", "label", "origin"]
    assert _same_labels(labeled, read_csv(simulated / "labeled.csv"))
    truth = {row["file"]: row["label"] for row in read_csv(key)}
    assert all(row["label"] == truth[row["file"]] for row in labeled)
    assert without_timings(read_csv(run / "history.csv")) == without_timings(read_csv(simulated / "history.csv"))
    assert [row["labels"] for row in read_csv(run / "history.csv")] == ["30", "60", "90"]
    assert read_run_status(run) == read_run_status(simulated) == "finished"


@pytest.mark.slow
def test_multilabel_expert_reproduces_the_simulation(tmp_path: Path) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30, findings=True)
    # Two rounds (30 -> 60 labels): one query, one answer.
    findings = [f"--data.source.init_args.classes=[{','.join(FINDINGS)}]", "--active.heuristic=CoreSet",
                "--active.max_labels=60"]  # fmt: skip
    simulated = _simulated(lab, tmp_path / "simulated", *findings)
    run = tmp_path / "human" / "lab_digits" / "run"
    human = _arguments(lab, tmp_path / "human", *findings)
    main(human)
    for round_index in (1,):
        header = next(csv.reader(open(run / f"query_round_{round_index}.csv")))
        assert header == ["rank", "pool_index", "file", "score", *FINDINGS]
        answers = tmp_path / f"answers_{round_index}.csv"
        answer_from_key(lab / "answer_key.csv", run / f"query_round_{round_index}.csv", answers)
        main([*human, f"--labels={answers}"])

    labeled = read_csv(run / "labeled.csv")
    assert list(labeled[0])[5:] == [*FINDINGS, "origin"]
    assert _same_labels(labeled, read_csv(simulated / "labeled.csv"))
    assert without_timings(read_csv(run / "history.csv")) == without_timings(read_csv(simulated / "history.csv"))
    assert [row["labels"] for row in read_csv(run / "history.csv")] == ["30", "60"]


def test_answers_not_asked_edited_initial_labels_and_simulating_unknown_labels_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    human = _arguments(lab, tmp_path / "logs", "--active.heuristic=RandomSampling")
    main(human)
    run = tmp_path / "logs" / "lab_digits" / "run"
    asked = {row["file"] for row in read_csv(run / "query_round_1.csv")}
    stranger = next(row for row in read_csv(lab / "answer_key.csv") if row["file"] not in asked)
    answers = tmp_path / "answers.csv"
    answers.write_text(f"file;label\r\n{stranger['file']};{stranger['label']}\r\n")  # as a spreadsheet saves it
    before = _checksums(run)
    with pytest.raises(SystemExit):
        main([*human, f"--labels={answers}"])
    assert f"{answers} line 2: {stranger['file']} was not asked for in round 1" in capsys.readouterr().err
    assert _checksums(run) == before  # a refused answers file leaves nothing behind (no config record either)

    labels = (lab / "labels.csv").read_text()  # an initial label edited after the run started
    (lab / "labels.csv").write_text(labels.replace(",0\n", ",6\n", 1))
    with pytest.raises(SystemExit):
        main(human)
    assert "the labels of the initial images differ from the checkpoint's" in capsys.readouterr().err
    (lab / "labels.csv").write_text(labels)

    with pytest.raises(SystemExit):  # the lab's folder with the simulated oracle: its labels are unknown
        main([*human, "--active.oracle=alvae_pl.oracles.SimulatedOracle", "--ckpt_path=null",
              "--trainer.logger.init_args.version=simulated"])  # fmt: skip
    assert "1227 pool images have no label, which a simulation cannot reveal" in capsys.readouterr().err


def test_partial_answers_are_used_or_waited_for_and_sheets_are_paged(tmp_path: Path) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    source = FolderSource(
        str(lab / "images"), str(lab / "labels.csv"), str(lab / "val.csv"), val_images=str(lab / "val")
    )
    datamodule = ActiveDataModule(source)
    asked = datamodule.pool.unlabeled[[5, 1, 9, 3, 7, 0]]  # picking order, not pool order
    query = Query(round_index=1, positions=asked, scores=torch.arange(6.0, 0.0, -1.0))
    use, wait = HumanOracle(partial="use", images_per_sheet=4), HumanOracle(partial="wait")

    assert "6 of 6 images" in use.answer(query, datamodule, tmp_path)  # written now: nobody has answered yet
    assert [p.name for p in sorted(tmp_path.glob("query_round_1*.png"))] == [
        "query_round_1_1.png",
        "query_round_1_2.png",
    ]
    _fill_in_place(tmp_path / "query_round_1.csv", lab / "answer_key.csv", count=3)

    assert "3 of 6 images" in wait.answer(query, datamodule, tmp_path)
    answers = use.answer(query, datamodule, tmp_path)
    assert answers.positions.tolist() == asked[:3].tolist()
    truth = {row["file"]: int(row["label"]) for row in read_csv(lab / "answer_key.csv")}
    files = datamodule.pool_files
    assert answers.targets.tolist() == [truth[files[p]] for p in asked[:3].tolist()]
