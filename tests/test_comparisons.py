"""Comparisons over heuristics and experiments: the penalty matrix, ranks (Friedman, Nemenyi, the
critical-difference diagram) and label efficiency, checked against scipy and plain loops written here."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from alvae_pl.analysis.comparisons import write_combined_report
from alvae_pl.analysis.critical_difference import (
    ScoreTable,
    friedman_nemenyi,
    nemenyi_critical_difference,
    plot_critical_difference,
    score_table,
)
from alvae_pl.analysis.history import History, Runs
from alvae_pl.analysis.label_efficiency import label_efficiency, labels_to_reach
from alvae_pl.analysis.penalty_matrix import penalty_matrix
from alvae_pl.analysis.report import write_report
from alvae_pl.experiments.cli import main as experiment_main
from alvae_pl.experiments.experiment import read_experiment
from tests.test_experiment_runner import make_experiment
from tests.test_experiment_runner import write_history as write_run_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEURISTICS = ("random", "coreset", "badge")


def history(labels: list[int], values: np.ndarray | list[float]) -> History:
    values = np.asarray(values, dtype=np.float64)
    return History(
        {
            "round": np.arange(len(labels)),
            "labels": np.asarray(labels),
            "val_accuracy": values,
            "test_accuracy": values - 0.01,
        }
    )


def fixed_settings() -> dict[str, Runs]:
    """Two settings of 3 heuristics: "low" (4 label counts, 5 seeds; the first round identical for all, a NaN at
    one round of one seed, an extra seed only random ran) and "mid" (3 label counts, 4 seeds)."""
    rng = np.random.default_rng(25)
    settings: dict[str, Runs] = {}
    for name, labels, seeds, gains in (
        ("low", [10, 20, 30, 40], 5, (0.0, 0.015, 0.03)),
        ("mid", [100, 200, 300], 4, (0.0, 0.03, 0.01)),
    ):
        base = 0.5 + 0.1 * np.arange(len(labels)) + rng.normal(0, 0.02, size=(seeds, len(labels)))
        runs: Runs = {}
        for heuristic, gain in zip(HEURISTICS, gains, strict=True):
            values = base + gain * np.arange(len(labels)) + rng.normal(0, 0.01, size=base.shape)
            values[:, 0] = base[:, 0]  # the same initial labels and weights: the first round ties
            runs[heuristic] = {seed: history(labels, values[seed]) for seed in range(seeds)}
        settings[name] = runs
    low = settings["low"]
    nan_row = low["badge"][2].column("val_accuracy").copy()
    nan_row[2] = math.nan
    low["badge"][2] = history([10, 20, 30, 40], nan_row)
    low["random"][9] = history([10, 20, 30, 40], [0.9, 0.9, 0.9, 0.9])  # unpaired: never compared
    return settings


def reference_penalty(settings: dict[str, Runs], alpha: float) -> np.ndarray:
    """Ash et al.'s matrix by a plain loop over settings, ordered pairs and label counts, with scipy's t-test."""
    k = len(HEURISTICS)
    matrix = np.zeros((k, k))
    for runs in settings.values():
        for i, j in itertools.permutations(range(k), 2):
            seeds = sorted(set(runs[HEURISTICS[i]]) & set(runs[HEURISTICS[j]]))
            curves_i = [runs[HEURISTICS[i]][s].values_by_labels("val_accuracy") for s in seeds]
            curves_j = [runs[HEURISTICS[j]][s].values_by_labels("val_accuracy") for s in seeds]
            counts = [n for n in curves_i[0] if all(math.isfinite(c[n]) for c in curves_i + curves_j)]
            for n in counts:
                a = np.array([c[n] for c in curves_i])
                b = np.array([c[n] for c in curves_j])
                if np.allclose(a, b):
                    continue
                result = stats.ttest_rel(a, b)
                if result.pvalue < alpha and result.statistic > 0:
                    matrix[i, j] += 1 / len(counts)
    return matrix


def test_penalty_matrix_matches_scipy_paired_t_tests_over_settings() -> None:
    settings = fixed_settings()
    result = penalty_matrix(settings, "val_accuracy", alpha=0.05)
    expected = reference_penalty(settings, 0.05)
    assert result.heuristics == HEURISTICS
    np.testing.assert_allclose(result.matrix, expected, atol=1e-12)
    # The table is not trivial: some wins, some ties, nothing on the diagonal, nothing above the number of settings.
    assert 0 < np.count_nonzero(expected) < 6 and np.all(np.diag(result.matrix) == 0)
    assert result.matrix.max() <= 2.0
    # "low": badge's NaN at 30 labels leaves 3 label counts for its pairs; the others compare all 4.
    assert result.rounds["low"] == {("random", "coreset"): 4, ("random", "badge"): 3, ("coreset", "badge"): 3}
    np.testing.assert_allclose(result.column_mean, expected.sum(axis=0) / 2)
    np.testing.assert_allclose(result.column_max, expected.max(axis=0))
    # A stricter level can only take wins away.
    assert np.all(penalty_matrix(settings, "val_accuracy", alpha=0.001).matrix <= result.matrix + 1e-12)


def test_friedman_statistic_matches_scipy_with_ties_and_the_nemenyi_cd_demsars_table() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(0, 1, size=(12, 4)) + np.array([0.0, 0.4, 0.8, 1.2]), 1)
    scores[0, 1] = scores[0, 2]  # a tie
    scores[5] = 0.5  # a block where every heuristic ties
    names = ("a", "b", "c", "d")
    table = ScoreTable("val_accuracy", names, tuple(map(str, range(12))), scores, "seed")
    result = friedman_nemenyi(table, alpha=0.05)
    reference = stats.friedmanchisquare(*scores.T)
    assert result.chi2 == pytest.approx(reference.statistic, rel=1e-10)
    assert result.pvalue == pytest.approx(reference.pvalue, rel=1e-8)
    n, k = scores.shape
    f_value = (n - 1) * reference.statistic / (n * (k - 1) - reference.statistic)
    assert result.iman_davenport == pytest.approx(f_value, rel=1e-10)
    assert result.iman_davenport_pvalue == pytest.approx(stats.f.sf(f_value, k - 1, (k - 1) * (n - 1)), rel=1e-8)
    # Ranks: 1 = the highest score, ties share the mean rank.
    np.testing.assert_allclose(result.ranks[0], stats.rankdata(-scores[0]))
    assert result.ranks[0, 1] == result.ranks[0, 2] and list(result.ranks[5]) == [2.5] * 4
    np.testing.assert_allclose(result.average_ranks, result.ranks.mean(axis=0))
    # Demšar (2006), Table 5(a): q_0.05 = 1.960, 2.343, 2.569, 2.728, 3.164 for k = 2, 3, 4, 5, 10.
    for k_, q in ((2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (10, 3.164)):
        assert nemenyi_critical_difference(k_, 6, 0.05) == pytest.approx(q * math.sqrt(k_ * (k_ + 1) / 36), abs=2e-3)
    assert result.critical_difference == pytest.approx(nemenyi_critical_difference(4, 12, 0.05))


def test_nemenyi_groups_are_the_maximal_sets_within_the_critical_difference(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    names = tuple(f"heuristic_{i}" for i in range(7))
    scores = rng.normal(0, 1, size=(15, 7)) + np.linspace(0, 2.0, 7)
    result = friedman_nemenyi(ScoreTable("val_accuracy", names, tuple(map(str, range(15))), scores, "seed"))
    ranks, cd = result.average_ranks, result.critical_difference
    within = {frozenset(g) for g in result.groups}
    # Reference by brute force: every set of heuristics whose ranks span less than CD, kept if no larger one holds it.
    candidates = [
        frozenset(c)
        for size in range(2, 8)
        for c in itertools.combinations(range(7), size)
        if max(ranks[list(c)]) - min(ranks[list(c)]) < cd
    ]
    maximal = {c for c in candidates if not any(c < other for other in candidates)}
    assert within == maximal and len(within) >= 2
    assert result.pvalue < 0.05  # the fixed table separates something, so the diagram has more than one group

    figure = plot_critical_difference(result, tmp_path / "cd.png")
    assert (tmp_path / "cd.png").read_bytes().startswith(PNG_MAGIC)
    texts = [text.get_text() for text in figure.axes[0].texts]
    for j, name in enumerate(names):  # each name once, with its average rank
        assert sum(name in text and f"{ranks[j]:.2f}" in text for text in texts) == 1
    assert any(f"CD = {cd:.2f}" in text for text in texts)


def test_score_blocks_are_seed_areas_or_round_means_over_experiments() -> None:
    settings = fixed_settings()
    by_seed = score_table(settings, "val_accuracy", "seed")
    # "low": seed 2 has badge's NaN and seed 9 only random: 4 blocks; "mid": 4 blocks.
    assert by_seed.blocks == tuple(f"low/seed_{s}" for s in (0, 1, 3, 4)) + tuple(f"mid/seed_{s}" for s in range(4))
    for b, block in enumerate(by_seed.blocks):
        setting, seed = block.split("/seed_")
        for j, name in enumerate(HEURISTICS):
            values = settings[setting][name][int(seed)].column("val_accuracy")
            assert by_seed.scores[b, j] == pytest.approx(np.mean(values))
    by_round = score_table(settings, "val_accuracy", "round")
    # At 30 labels in "low", badge lacks seed 2: that round is not a complete block.
    assert by_round.blocks == (
        "low/10 labels",
        "low/20 labels",
        "low/40 labels",
        *(f"mid/{n} labels" for n in (100, 200, 300)),
    )
    mid = settings["mid"]
    expected = [np.mean([mid[name][s].values_by_labels("val_accuracy")[200] for s in range(4)]) for name in HEURISTICS]
    np.testing.assert_allclose(by_round.scores[by_round.blocks.index("mid/200 labels")], expected)
    with pytest.raises(ValueError, match="ranking needs at least two"):
        score_table({"mid": {n: {0: r[0]} for n, r in mid.items()}}, "val_accuracy", "seed")


def reference_labels_to_reach(labels: list[int], values: list[float], target: float) -> float:
    for index, (n, v) in enumerate(zip(labels, values, strict=True)):
        if v >= target:
            if index == 0:
                return float(n)
            n0, v0 = labels[index - 1], values[index - 1]
            return n0 + (n - n0) * (target - v0) / (v - v0)
    return math.nan


def test_label_efficiency_interpolates_between_rounds_on_mean_and_seed_curves() -> None:
    labels = [100, 200, 300, 400]
    curves = {
        "random": [[0.50, 0.60, 0.70, 0.82], [0.52, 0.62, 0.72, 0.76]],
        "badge": [[0.50, 0.75, 0.85, 0.90], [0.50, 0.70, 0.84, 0.88]],
        "flat": [[0.40, 0.42, 0.43, 0.45], [0.41, 0.42, 0.44, 0.44]],
    }
    runs = {name: {seed: history(labels, v) for seed, v in enumerate(c)} for name, c in curves.items()}
    result = label_efficiency(runs, "val_accuracy", fraction=0.9, baseline="random")
    assert result.best == "badge" and result.final_labels == 400
    assert result.target == pytest.approx(0.9 * 0.89)
    for name, seeds in curves.items():
        mean = np.mean(seeds, axis=0).tolist()
        assert result.mean_curve[name] == pytest.approx(
            reference_labels_to_reach(labels, mean, result.target), nan_ok=True
        )
        for seed, values in enumerate(seeds):
            expected = reference_labels_to_reach(labels, values, result.target)
            assert result.per_seed[name][seed] == pytest.approx(expected, nan_ok=True)
    assert math.isnan(result.mean_curve["flat"]) and math.isnan(result.mean_curve["random"])  # mean 0.79 < 0.801
    assert result.per_seed["random"][1] != result.per_seed["random"][1]  # 0.76: never
    assert 300 < result.per_seed["random"][0] < 400  # 0.82 at 400: reached between the last two rounds
    assert labels_to_reach([10, 20], [0.9, 0.95], 0.5) == 10.0  # above the target from the start
    with pytest.raises(ValueError, match="fraction must lie in"):
        label_efficiency(runs, "val_accuracy", fraction=1.5)


def test_report_of_one_experiment_gains_efficiency_penalty_and_ranks(tmp_path: Path) -> None:
    runs = fixed_settings()["low"]
    report = write_report(runs, tmp_path / "report", "random", metrics=["val_accuracy"], tensorboard=False)
    folder = tmp_path / "report"
    page = (folder / "report.md").read_text()
    for heading in ("Label efficiency", "Pairwise penalty matrix", "Average ranks", "critical_difference_val_accuracy"):
        assert heading in page
    for figure in ("critical_difference_val_accuracy.png", "penalty_val_accuracy.png"):
        assert (folder / figure).read_bytes().startswith(PNG_MAGIC)
    with (folder / "penalty_val_accuracy.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["beats", *HEURISTICS] and rows[-2][0] == "column_mean"
    expected = reference_penalty({"low": runs}, 0.05)
    np.testing.assert_allclose(np.array([[float(c) for c in row[1:]] for row in rows[1:4]]), expected)
    assert report.sections["val_accuracy"].efficiency in page
    with (folder / "ranks_val_accuracy.csv").open(newline="") as handle:
        assert len(list(csv.reader(handle))) == 1 + 4 + 1  # header, 4 complete seeds, the average ranks


def test_combined_report_of_two_experiments_ranks_their_shared_variants(tmp_path: Path) -> None:
    settings = fixed_settings()
    settings["mid"]["entropy"] = settings["mid"]["coreset"]  # only in one experiment: left out
    report = write_combined_report(settings, tmp_path / "both", ["val_accuracy", "val_auroc"])
    assert report.heuristics == HEURISTICS and report.left_out == {"mid": ["entropy"]}
    assert report.skipped == {"val_auroc": "no values in some experiment's histories"}
    table = score_table(settings, "val_accuracy", "seed", HEURISTICS)
    reference = stats.friedmanchisquare(*table.scores.T)
    ranks = (tmp_path / "both" / "ranks_val_accuracy.md").read_text()
    assert f"over {len(table.blocks)} blocks" in ranks and f"chi² = {reference.statistic:.3f}" in ranks
    assert (tmp_path / "both" / "critical_difference_val_accuracy.png").is_file()
    assert not (tmp_path / "both" / "efficiency_val_accuracy.md").exists()  # each experiment's own report has it
    with pytest.raises(ValueError, match="at least two experiments"):
        write_combined_report({"low": settings["low"]}, tmp_path / "one", ["val_accuracy"])


def test_report_command_takes_several_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("toy_low", "toy_mid", "lone"):
        (tmp_path / name).mkdir()
    paths = [
        make_experiment(tmp_path / name, with_vae=False, name=name, root=str(tmp_path / "runs"), seeds=[0, 1, 2])
        for name in ("toy_low", "toy_mid")
    ]
    experiments = [read_experiment(path) for path in paths]
    rng = np.random.default_rng(0)
    for experiment in experiments:
        for variant in experiment.variants:
            for seed in experiment.seeds:
                values = 0.5 + 0.1 * np.arange(3) + rng.normal(0, 0.02, 3) + (0.05 if variant == "base_vae" else 0)
                write_run_history(experiment.run_folder(variant, seed), values)
    arguments = ["report", "--config", str(paths[0]), "--config", str(paths[1])]
    assert experiment_main([*arguments, "--fraction", "1.5"]) == 2  # a typo: one line, nothing written
    assert "--fraction in (0, 1]" in capsys.readouterr().err
    assert not any("report" in p.name for p in (tmp_path / "runs").rglob("*"))
    assert experiment_main(arguments) == 0
    printed = capsys.readouterr().out
    combined = tmp_path / "runs" / "report_toy_low+toy_mid"
    assert "Pairwise penalty matrix" in printed and "Average ranks" in printed
    assert "summed over 2 setting(s): toy_low, toy_mid" in (combined / "penalty_test_accuracy.md").read_text()
    assert "over 6 blocks" in (combined / "ranks_test_accuracy.md").read_text()  # 2 experiments x 3 seeds
    for experiment in experiments:  # each experiment's own report, with its label efficiency
        assert (experiment.report_folder / "efficiency_test_accuracy.md").is_file()

    # Experiments sharing fewer than two variants: one line, and no report written.
    lone = make_experiment(
        tmp_path / "lone",
        with_vae=False,
        name="toy_lone",
        root=str(tmp_path / "runs"),
        seeds=[0],
        variants={
            "other": str(tmp_path / "lone" / "configs" / "base.yaml"),
            "base": str(tmp_path / "lone" / "configs" / "base.yaml"),
        },
    )
    write_run_history(read_experiment(lone).run_folder("other", 0), [0.5, 0.6, 0.7])
    write_run_history(read_experiment(lone).run_folder("base", 0), [0.5, 0.6, 0.7])
    before = sorted(p for p in (tmp_path / "runs").rglob("*") if "report" in str(p))
    mixed = ["report", "--config", str(paths[0]), "--config", str(lone), "--out", str(tmp_path / "mixed")]
    assert experiment_main(mixed) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "share fewer than two variants" in error[0]
    assert not (tmp_path / "mixed").exists()
    assert sorted(p for p in (tmp_path / "runs").rglob("*") if "report" in str(p)) == before
