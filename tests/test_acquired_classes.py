"""Which classes each variant's rounds asked for, read from the runs' labeled.csv (the report's class_balance.md)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import entropy

from alvae_pl.analysis.acquired_classes import acquired_counts, class_balance_table
from alvae_pl.analysis.history import load_experiment
from alvae_pl.analysis.report import write_report


def write_run(folder: Path, labeled_header: str, labeled_rows: list[str], accuracy: list[float]) -> None:
    folder.mkdir(parents=True)
    history = ["round,labels,epochs,val_accuracy"]
    history += [f"{r},{10 * (r + 1)},1,{value}" for r, value in enumerate(accuracy)]
    (folder / "history.csv").write_text("\n".join(history) + "\n")
    (folder / "labeled.csv").write_text("\n".join([labeled_header, *labeled_rows]) + "\n")


MULTICLASS_HEADER = "round,pool_index,dataset_index,score,file,label,origin"


def multiclass_rows(labels_by_round: list[list[str]]) -> list[str]:
    rows, index = [], 0
    for round_index, labels in enumerate(labels_by_round):
        for label in labels:
            origin = "random draw" if round_index == 0 else f"answer to round {round_index}"
            rows.append(f"{round_index},{index},{index},0.5,img {index}.png,{label},{origin}")
            index += 1
    return rows


def test_counts_leave_out_the_initial_labels_and_balance_is_the_normalised_entropy(tmp_path: Path) -> None:
    experiment = tmp_path / "experiment"
    # Round 0 (initial labels) is never counted; class "10" sorts after "2" (natural order).
    write_run(experiment / "a" / "seed_0", MULTICLASS_HEADER,
              multiclass_rows([["0", "0", "0"], ["0", "2", "2"], ["10", "2"]]), [0.5, 0.6, 0.7])  # fmt: skip
    write_run(experiment / "a" / "seed_1", MULTICLASS_HEADER,
              multiclass_rows([["2"], ["0", "10"], ["10", "10"]]), [0.5, 0.6, 0.7])  # fmt: skip
    write_run(experiment / "b" / "seed_0", MULTICLASS_HEADER,
              multiclass_rows([["0"], ["0", "0"], ["0", "0"]]), [0.4, 0.5, 0.6])  # fmt: skip
    rows = class_balance_table(load_experiment(experiment))
    assert [row.variant for row in rows] == ["a", "b"]
    a, b = rows
    assert a.seeds == 2 and list(a.counts) == ["0", "2", "10"]
    assert a.counts == {"0": 2, "2": 3, "10": 4} and (a.total, a.fewest, a.most) == (9, 2, 4)
    assert b.counts == {"0": 4, "2": 0, "10": 0} and b.balance == pytest.approx(0.0)
    assert a.balance == pytest.approx(entropy([2, 3, 4]) / math.log(3))


def test_multilabel_counts_the_positives_of_each_finding(tmp_path: Path) -> None:
    path = tmp_path / "labeled.csv"
    path.write_text(
        "round,pool_index,dataset_index,score,effusion,mass,nodule,origin\n"
        "0,0,0,,1,1,1,random draw\n"
        "1,1,1,0.9,1,0,1,answer to round 1\n"
        "1,2,2,0.8,0,0,0,answer to round 1\n"
        "2,3,3,0.7,1,0,0,answer to round 2\n"
    )
    assert dict(acquired_counts(path)) == {"effusion": 2, "mass": 0, "nodule": 1}


def test_the_report_writes_the_class_balance_table(tmp_path: Path) -> None:
    experiment = tmp_path / "experiment"
    for variant, labels in (("random", ["1", "1", "1", "2"]), ("balanced", ["1", "2", "3", "4"])):
        for seed in (0, 1):
            rows = multiclass_rows([["1"], labels[:2], labels[2:]])
            write_run(experiment / variant / f"seed_{seed}", MULTICLASS_HEADER, rows, [0.5, 0.6 + seed / 100, 0.7])
    report = write_report(load_experiment(experiment), tmp_path / "report", "random", ["val_accuracy"],
                          tensorboard=False)  # fmt: skip
    table = (tmp_path / "report" / "class_balance.md").read_text()
    assert "| balanced | 2 | 2 | 2 | 2 | 2 | 2 / 2 | 1.000 |" in table
    assert "| random | 2 | 6 | 2 | 0 | 0 | 0 / 6 |" in table
    assert "## Classes acquired" in (tmp_path / "report" / "report.md").read_text()
    csv_rows = (tmp_path / "report" / "class_balance.csv").read_text().splitlines()
    assert csv_rows[0] == "variant,seeds,1,2,3,4,total,fewest,most,balance"
    expected = entropy(np.array([6, 2])) / math.log(4)
    assert float(csv_rows[2].split(",")[-1]) == pytest.approx(expected) and report.class_balance_markdown == table
