"""``train.py predict``: the run's current model on every pool image (and the validation and test images), beside
what the run knows of each, in ``predictions.csv``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from alvae_pl.cli import main
from alvae_pl.data.datamodule import ActiveDataModule
from alvae_pl.data.digits_folder import write_digits_folder
from alvae_pl.data.sources import FolderSource
from alvae_pl.oracles.answer_key import answer_from_key
from alvae_pl.predictions import prediction_table
from tests.helpers.cli_runs import TINY, read_csv


def _arguments(lab: Path, logs: Path) -> list[str]:
    source = "--data.source.init_args."
    return [
        "--config", "configs/lab_digits.yaml", *TINY,
        f"{source}images={lab / 'images'}", f"{source}labels={lab / 'labels.csv'}",
        f"{source}val_labels={lab / 'val.csv'}", f"{source}val_images={lab / 'val'}",
        f"{source}test_labels={lab / 'test.csv'}", f"{source}test_images={lab / 'test'}",
        f"--trainer.logger.init_args.save_dir={logs}", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--active.max_labels=60", "--active.epochs_first=1",
        "--active.epochs_increment=0",
    ]  # fmt: skip


def _accuracy(rows: list[dict[str, str]], split: str) -> float:
    chosen = [row for row in rows if row["split"] == split]
    return sum(row["predicted"] == row["label"] for row in chosen) / len(chosen)


@pytest.mark.slow  # four train.py commands: ~50 s on 2 cores
def test_predictions_of_a_waiting_and_a_finished_lab_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    arguments = _arguments(lab, tmp_path / "logs")
    run = tmp_path / "logs" / "lab_digits" / "run"

    with pytest.raises(SystemExit) as refused:  # nothing trained yet: one line, and no run folder appears
        main(["predict", *arguments])
    assert refused.value.code == 2 and not run.exists()
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {run / 'checkpoints' / 'last.ckpt'}")

    main(["fit", *arguments])  # round 0 trains on the 30 labels of the file; round 1's query waits for the expert
    cli = main(["predict", *arguments, "--splits=[pool,val,test]"])
    assert "the model of round 0, trained on 30 labels (round_model.pt)" in capsys.readouterr().err
    rows = read_csv(run / "predictions.csv")
    classes = [str(k) for k in range(10)]
    assert list(rows[0]) == ["split", "index", "file", "predicted", *[f"p_{k}" for k in classes], "label", "origin",
                             "round", "score"]  # fmt: skip
    pool = [row for row in rows if row["split"] == "pool"]
    datamodule, model = cli.datamodule, cli.model
    assert [row["file"] for row in pool] == list(datamodule.pool_files)
    # The model's own outputs: probabilities and the most probable class of every pool image.
    with torch.inference_mode():
        expected = model.eval()(datamodule.pool_images(torch.arange(len(pool)))).softmax(dim=1)
    written = torch.tensor([[float(row[f"p_{k}"]) for k in classes] for row in pool])
    assert torch.allclose(written, expected, rtol=1e-5, atol=1e-6)
    assert [row["predicted"] for row in pool] == [classes[k] for k in expected.argmax(dim=1).tolist()]
    # The model that chose the query (not the reset weights the checkpoint holds): its accuracy is round 0's.
    history = read_csv(run / "history.csv")
    assert _accuracy(rows, "val") == pytest.approx(float(history[0]["val_accuracy"]), abs=1e-6)
    assert _accuracy(rows, "test") == pytest.approx(float(history[0]["test_accuracy"]), abs=1e-6)
    asked = {row["file"]: row["score"] for row in read_csv(run / "query_round_1.csv")}
    assert {row["file"]: row["score"] for row in pool if row["score"]} == asked  # the open query's scores
    given = {row["file"]: row["label"] for row in read_csv(lab / "labels.csv")}
    labeled = {row["file"]: (row["label"], row["origin"], row["round"]) for row in pool if row["label"]}
    assert labeled == {name: (label, "labels file", "0") for name, label in given.items()}
    assert all(row["origin"] == "val labels" for row in rows if row["split"] == "val")

    answers = tmp_path / "answers.csv"
    answer_from_key(lab / "answer_key.csv", run / "query_round_1.csv", answers)
    main(["fit", *arguments, f"--labels={answers}"])  # round 1 trains on 60 labels: the run finishes
    main(["predict", *arguments, "--splits=[val,pool]"])
    assert "the model of round 1, trained on 60 labels (last.ckpt)" in capsys.readouterr().err
    rows = read_csv(run / "predictions.csv")
    assert [row["split"] for row in rows] == ["val"] * 270 + ["pool"] * len(pool)
    assert _accuracy(rows, "val") == pytest.approx(float(read_csv(run / "history.csv")[1]["val_accuracy"]), abs=1e-6)
    answered = {row["file"]: row for row in rows if row["origin"] == "answer to round 1"}
    truth = {row["file"]: row["label"] for row in read_csv(lab / "answer_key.csv")}
    assert set(answered) == set(asked) and all(row["label"] == truth[name] for name, row in answered.items())
    assert {name: row["score"] for name, row in answered.items()} == asked  # the last round's picks keep their scores
    record = read_csv(run / "labeled.csv")  # the continued run's record: every label, and where it came from
    assert [row["origin"] for row in record] == ["labels file"] * 30 + ["answer to round 1"] * 30
    assert all(row["label"] == truth[row["file"]] for row in record)


def test_multilabel_rows_name_the_findings_predicted_and_given(tmp_path: Path) -> None:
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30, findings=True)
    source = FolderSource(
        str(lab / "images"), str(lab / "labels.csv"), str(lab / "val.csv"), val_images=str(lab / "val")
    )
    datamodule = ActiveDataModule(source)
    names = datamodule.data.class_names
    probs = torch.rand(len(datamodule.pool), len(names), generator=torch.Generator().manual_seed(0))
    asked = datamodule.pool.unlabeled[:3]
    columns, rows = prediction_table(datamodule, {"pool": probs}, dict.fromkeys(asked.tolist(), 0.5))
    assert columns == ["split", "index", "file", "predicted", *[f"p_{n}" for n in names], "label", "origin", "round",
                       "score"]  # fmt: skip
    key = {row["file"]: row for row in read_csv(lab / "answer_key.csv")}
    given = {row["file"] for row in read_csv(lab / "labels.csv")}
    for row, p in zip(rows, probs.tolist(), strict=True):  # a plain loop as the reference
        present = [name for name, value in zip(names, p, strict=True) if value >= 0.5]
        assert row["predicted"] == (";".join(present) or "none")
        if row["file"] in given:
            truth = [name for name in names if key[row["file"]][name] == "1"]
            assert (row["label"], row["origin"], row["round"]) == (";".join(truth) or "none", "labels file", 0)
        else:
            assert row.get("label") is None and row.get("origin") is None  # an empty cell in the file
    assert [row["score"] for row in rows if not math.isnan(row["score"])] == [0.5] * 3
