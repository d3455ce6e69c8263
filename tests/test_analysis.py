"""Analysis: histories on disk -> paired statistics, tables, learning curves and t-SNE panels."""

from __future__ import annotations

import csv
import math
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from alvae_pl.analysis import (
    ComparisonRow,
    Panel,
    compare_variants,
    confidence_band,
    embed_tsne,
    figure_to_tensorboard,
    load_experiment,
    long_format,
    make_panel,
    paired_pvalues,
    plot_curves,
    plot_selection_panels,
    roles_from_indices,
    summarize,
    to_markdown,
    write_markdown,
    write_table_csv,
)
from alvae_pl.analysis.history import HISTORY_COLUMNS
from alvae_pl.atomic_files import atomic_write_text

LABELS = [100, 200, 300, 400, 500]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_history(path: Path, val_accuracy: list[float], labels: list[int] = LABELS) -> None:
    """A history.csv as a run writes it; acquisition_seconds is empty for the last round."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        for index, (n_labels, accuracy) in enumerate(zip(labels, val_accuracy, strict=True)):
            last = index == len(labels) - 1
            writer.writerow(
                {
                    "round": index,
                    "labels": n_labels,
                    "epochs": 10 + 5 * index,
                    "train_accuracy": 1.0,
                    "val_accuracy": repr(accuracy),
                    "val_auroc": 0.9,
                    "test_accuracy": repr(accuracy - 0.01),
                    "test_auroc": 0.88,
                    "train_seconds": 1.5,
                    "acquisition_seconds": "" if last else 0.25,
                }
            )


def make_experiment(root: Path, values: dict[str, dict[int, list[float]]]) -> Path:
    folder = root / "digits_coreset"
    for variant, seeds in values.items():
        for seed, accuracies in seeds.items():
            write_history(folder / variant / f"seed_{seed}" / "history.csv", accuracies)
    return folder


@pytest.fixture
def synthetic_values() -> dict[str, dict[int, list[float]]]:
    """2 variants x 4 shared seeds x 5 label counts, plus a seed only the VAE variant ran."""
    rng = np.random.default_rng(0)
    base = {seed: (0.6 + 0.06 * np.arange(5) + rng.normal(0, 0.02, 5)).tolist() for seed in range(4)}
    vae = {seed: (np.asarray(base[seed]) + rng.normal(0.01, 0.02, 5)).tolist() for seed in range(4)}
    vae[7] = [0.1, 0.2, 0.3, 0.4, 0.5]
    return {"coreset": base, "coreset_vae": vae}


@pytest.fixture
def experiment(tmp_path: Path, synthetic_values: dict[str, dict[int, list[float]]]) -> Path:
    return make_experiment(tmp_path, synthetic_values)


def test_load_experiment_round_trips_columns(experiment: Path, synthetic_values) -> None:
    runs = load_experiment(experiment)
    assert list(runs) == ["coreset", "coreset_vae"]
    assert list(runs["coreset"]) == [0, 1, 2, 3]
    assert list(runs["coreset_vae"]) == [0, 1, 2, 3, 7]
    history = runs["coreset_vae"][2]
    assert history.labels.tolist() == LABELS and history.labels.dtype == np.int64
    assert history.column("epochs").tolist() == [10, 15, 20, 25, 30]
    assert history.column("val_accuracy").tolist() == synthetic_values["coreset_vae"][2]
    acquisition = history.column("acquisition_seconds")
    assert np.all(acquisition[:-1] == 0.25) and math.isnan(acquisition[-1])
    rows = long_format(runs, ["val_accuracy"])
    assert len(rows) == (4 + 5) * 5
    assert rows[0] == {
        "variant": "coreset",
        "seed": 0,
        "round": 0,
        "labels": 100,
        "metric": "val_accuracy",
        "value": synthetic_values["coreset"][0][0],
    }


def test_load_experiment_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_experiment(tmp_path / "missing")
    (tmp_path / "empty" / "coreset" / "seed_0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"seed_<k>/history\.csv"):
        load_experiment(tmp_path / "empty")
    broken = tmp_path / "broken" / "coreset" / "seed_0" / "history.csv"
    broken.parent.mkdir(parents=True)
    broken.write_text("round,val_accuracy\n0,0.5\n")
    with pytest.raises(ValueError, match="lacks column"):
        load_experiment(tmp_path / "broken")
    broken.write_text("round,labels,val_accuracy\n0,100,abc\n")
    with pytest.raises(ValueError, match="row 2 column 'val_accuracy'"):
        load_experiment(tmp_path / "broken")
    broken.write_text("round,labels,val_accuracy\n0,100,0.5\n1,100,0.6\n")
    with pytest.raises(ValueError, match="repeats a label count"):
        load_experiment(tmp_path / "broken")


def test_compare_variants_matches_scipy_on_paired_seeds(experiment: Path, synthetic_values) -> None:
    runs = load_experiment(experiment)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = compare_variants(runs, "val_accuracy", baseline="coreset")
    assert [row.labels for row in rows] == LABELS
    for index, row in enumerate(rows):
        # Seed 7 has no coreset run: it must not enter the paired statistics.
        base = np.asarray([synthetic_values["coreset"][seed][index] for seed in range(4)])
        vae = np.asarray([synthetic_values["coreset_vae"][seed][index] for seed in range(4)])
        assert (row.variant, row.baseline, row.n_pairs, row.seeds) == ("coreset_vae", "coreset", 4, (0, 1, 2, 3))
        assert row.baseline_mean == pytest.approx(base.mean(), abs=1e-12)
        assert row.variant_mean == pytest.approx(vae.mean(), abs=1e-12)
        assert row.baseline_std == pytest.approx(base.std(ddof=1), abs=1e-12)
        assert row.variant_std == pytest.approx(vae.std(ddof=1), abs=1e-12)
        assert row.mean_difference == pytest.approx((vae - base).mean(), abs=1e-12)
        assert row.t_pvalue == pytest.approx(stats.ttest_rel(vae, base).pvalue, rel=1e-9)
        assert row.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(vae - base).pvalue, rel=1e-9)
        assert row.significant == (row.t_pvalue < 0.05)
        half = stats.t.ppf(0.975, 3) * (vae - base).std(ddof=1) / 2.0
        assert (row.difference_ci_low, row.difference_ci_high) == pytest.approx(
            ((vae - base).mean() - half, (vae - base).mean() + half)
        )


def test_summarize_uses_every_seed_with_t_band(experiment: Path, synthetic_values) -> None:
    rows = summarize(load_experiment(experiment), "val_accuracy")
    vae_first = next(row for row in rows if row.variant == "coreset_vae" and row.labels == 100)
    values = np.asarray([synthetic_values["coreset_vae"][seed][0] for seed in (0, 1, 2, 3, 7)])
    half = stats.t.ppf(0.975, 4) * values.std(ddof=1) / math.sqrt(5)
    assert vae_first.n == 5
    assert (vae_first.mean, vae_first.std) == pytest.approx((values.mean(), values.std(ddof=1)))
    assert (vae_first.ci_low, vae_first.ci_high) == pytest.approx((values.mean() - half, values.mean() + half))
    assert confidence_band(np.asarray([0.5]))[0] == 0.5 and math.isnan(confidence_band(np.asarray([0.5]))[1])


def test_degenerate_pairs_give_defined_pvalues_without_warnings(tmp_path: Path) -> None:
    base = {seed: [0.5 + 0.01 * seed + 0.1 * k for k in range(5)] for seed in range(4)}
    shifted = {seed: [value + 0.05 for value in values] for seed, values in base.items()}
    runs = load_experiment(
        make_experiment(tmp_path, {"coreset": base, "identical": base, "shifted": shifted, "single": {0: base[0]}})
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = compare_variants(runs, "val_accuracy", baseline="coreset")
    by_variant = {
        variant: [row for row in rows if row.variant == variant] for variant in ("identical", "shifted", "single")
    }
    for row in by_variant["identical"]:
        assert (row.t_pvalue, row.wilcoxon_pvalue, row.significant) == (1.0, 1.0, False)
    for row in by_variant["shifted"]:
        # Equal non-zero differences: the t statistic is undefined; Wilcoxon with 4 pairs cannot reach 0.05.
        assert math.isnan(row.t_pvalue) and not row.significant
        assert row.mean_difference == pytest.approx(0.05)
        assert row.wilcoxon_pvalue == pytest.approx(0.125)
    for row in by_variant["single"]:
        assert row.n_pairs == 1 and math.isnan(row.t_pvalue) and math.isnan(row.wilcoxon_pvalue)
        assert math.isnan(row.baseline_std) and not row.significant
    assert all(math.isnan(p) for p in paired_pvalues(np.asarray([0.5]), np.asarray([0.6])))
    markdown = to_markdown(by_variant["single"])
    assert "n/a" in markdown and "**0" not in markdown


def test_markdown_and_csv_tables(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = {seed: (0.6 + rng.normal(0, 0.01, 5)).tolist() for seed in range(6)}
    better = {seed: (np.asarray(values) + 0.1 + rng.normal(0, 0.005, 5)).tolist() for seed, values in base.items()}
    runs = load_experiment(make_experiment(tmp_path, {"coreset": base, "coreset_vae": better}))
    rows = compare_variants(runs, "val_accuracy", baseline="coreset")
    assert all(row.significant and row.t_pvalue < 1e-4 for row in rows)
    markdown = to_markdown(rows)
    assert "| labels | variant | pairs | coreset (baseline) |" in markdown
    assert "t-test p | Wilcoxon p |" in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| 100 ")]
    assert len(table_rows) == 1 and "**" in table_rows[0] and "coreset_vae" in table_rows[0]
    # 6 pairs, all improving: Wilcoxon's exact p is 2/64 < 0.05, also bold.
    assert rows[0].wilcoxon_pvalue == pytest.approx(2 / 64) and table_rows[0].count("**") == 4

    csv_path = write_table_csv(rows, tmp_path / "tables" / "val_accuracy.csv")
    md_path = write_markdown(rows, tmp_path / "tables" / "val_accuracy.md")
    assert md_path.read_text() == markdown
    with csv_path.open(newline="") as handle:
        read = list(csv.DictReader(handle))
    assert len(read) == len(rows) == 5
    assert float(read[2]["t_pvalue"]) == rows[2].t_pvalue
    assert read[0]["seeds"] == "0;1;2;3;4;5" and read[0]["significant"] == "True"
    assert set(read[0]) == set(ComparisonRow.__dataclass_fields__)
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["val_accuracy.csv", "val_accuracy.md"]


def test_bad_arguments_name_the_choices(experiment: Path) -> None:
    runs = load_experiment(experiment)
    with pytest.raises(ValueError, match="choose one of"):
        compare_variants(runs, "val_acc", baseline="coreset")
    with pytest.raises(ValueError, match=r"baseline 'random' has no runs"):
        compare_variants(runs, "val_accuracy", baseline="random")
    with pytest.raises(ValueError, match="needs a second variant"):
        compare_variants({"coreset": runs["coreset"]}, "val_accuracy", baseline="coreset")
    with pytest.raises(ValueError, match="share no seed"):
        compare_variants({"coreset": runs["coreset"], "other": {7: runs["coreset_vae"][7]}}, "val_accuracy", "coreset")


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


def test_plot_curves_draws_mean_and_band_per_variant(experiment: Path, tmp_path: Path) -> None:
    runs = load_experiment(experiment)
    path = tmp_path / "figures" / "val_accuracy.png"
    figure = plot_curves(runs, "val_accuracy", path)
    assert_png(path)
    (axes,) = figure.axes
    lines = axes.get_lines()
    assert [line.get_label() for line in lines] == ["coreset (n=4)", "coreset_vae (n=5)"]
    summary = [row for row in summarize(runs, "val_accuracy") if row.variant == "coreset"]
    assert lines[0].get_xdata().tolist() == LABELS
    assert np.allclose(lines[0].get_ydata(), [row.mean for row in summary])
    assert len(axes.collections) == 2  # one shaded band per variant
    assert axes.get_xlabel() == "number of labeled images" and "95%" in axes.get_title()


def test_figure_to_tensorboard_logs_an_image(experiment: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    figure = plot_curves(load_experiment(experiment), "test_accuracy")
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    figure_to_tensorboard(figure, writer, "al/curves/test_accuracy", step=3)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    (image,) = events.Images("al/curves/test_accuracy")
    assert image.step == 3 and image.encoded_image_string[:8] == PNG_MAGIC
    with pytest.raises(TypeError, match="SummaryWriter"):
        figure_to_tensorboard(figure, object(), "x")


def clustered_features(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """150 points in 3 well separated Gaussian clusters in 16-d: features [150, 16], cluster ids [150]."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (3, 16))
    clusters = np.repeat(np.arange(3), 50)
    return centers[clusters] + rng.normal(0, 1, (150, 16)), clusters


def test_embed_tsne_is_deterministic_and_keeps_clusters() -> None:
    features, clusters = clustered_features(0)
    first = embed_tsne(features, seed=3, num_threads=1)
    second = embed_tsne(features, seed=3, num_threads=1)
    assert first.shape == (150, 2) and np.all(np.isfinite(first))
    np.testing.assert_allclose(first, second)
    distances = np.linalg.norm(first[:, None] - first[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert np.mean(clusters[distances.argmin(axis=1)] == clusters) > 0.95
    assert embed_tsne(features[:5], seed=0, num_threads=1).shape == (5, 2)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        embed_tsne(features[0], seed=0)


def test_selection_panels_side_by_side(tmp_path: Path) -> None:
    features, _ = clustered_features(1)
    roles = roles_from_indices(150, labeled=np.arange(0, 150, 5), selected=[1, 2, 3, 51, 101])
    assert (roles == "labeled").sum() == 30 and (roles == "selected").sum() == 5 and (roles == "unlabeled").sum() == 115
    with_vae = np.concatenate([features, np.random.default_rng(2).normal(size=(150, 4))], axis=1)
    panels = [
        make_panel(features, roles, "core-set", seed=0, num_threads=1),
        make_panel(with_vae, roles, "core-set + VAE", seed=0, num_threads=1),
    ]
    path = tmp_path / "tsne.png"
    figure = plot_selection_panels(panels, path)
    assert_png(path)
    assert [axes.get_title() for axes in figure.axes] == ["core-set", "core-set + VAE"]
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["unlabeled (115)", "labeled (30)", "selected (5)"]
    sizes = {c.get_label(): c.get_sizes()[0] for c in figure.axes[0].collections}
    assert sizes["selected (5)"] > sizes["labeled (30)"] > sizes["unlabeled (115)"]
    with pytest.raises(ValueError, match="already labeled"):
        roles_from_indices(150, labeled=[0, 1], selected=[1])
    with pytest.raises(ValueError, match="unknown role"):
        Panel("bad", np.zeros((2, 2)), np.asarray(["labeled", "queried"]))


def test_report_files_follow_the_umask_like_any_other_file(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        written = atomic_write_text(tmp_path / "report.md", "# report\n")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(umask)
    assert written.read_text() == "# report\n"
    # Readable by colleagues on a shared machine, as a plain open() would make it (not mkstemp's 0o600).
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_curve_bands_of_accuracies_stay_within_zero_and_one(tmp_path: Path) -> None:
    # Three seeds near 1: the t-interval (t = 4.3) reaches past 1, the drawn band must not.
    near_one = {seed: [0.5, 0.9, 0.97, 0.99, v] for seed, v in enumerate([0.93, 1.0, 0.96])}
    runs = load_experiment(make_experiment(tmp_path, {"coreset": near_one, "coreset_vae": near_one}))
    assert max(row.ci_high for row in summarize(runs, "val_accuracy")) > 1.0  # the table's interval, unclipped
    figure = plot_curves(runs, "val_accuracy")
    (axes,) = figure.axes
    band = axes.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() <= 1.0 and band[:, 1].min() >= 0.0
    assert "clipped to [0, 1]" in axes.get_title()


def test_area_under_each_curve_is_its_mean_over_label_counts_with_paired_tests(
    experiment: Path, synthetic_values, tmp_path: Path
) -> None:
    from scipy import stats

    from alvae_pl.analysis.report import write_report
    from alvae_pl.analysis.statistics import compare_areas

    runs = load_experiment(experiment)
    comparison = compare_areas(runs, "val_accuracy", baseline="coreset")
    assert comparison.label_counts == tuple(LABELS)
    expected = {v: {s: float(np.mean(values)) for s, values in seeds.items()} for v, seeds in synthetic_values.items()}
    assert list(comparison.areas) == list(expected)
    for variant, seeds in expected.items():
        assert comparison.areas[variant] == pytest.approx(seeds)
    (row,) = comparison.rows  # coreset_vae against coreset, over the 4 shared seeds (seed 7 has no pair)
    base = [expected["coreset"][s] for s in range(4)]
    other = [expected["coreset_vae"][s] for s in range(4)]
    assert row.variant == "coreset_vae" and row.seeds == (0, 1, 2, 3) and row.labels == len(LABELS)
    assert row.mean_difference == pytest.approx(np.mean(np.subtract(other, base)))
    assert row.t_pvalue == pytest.approx(stats.ttest_rel(other, base).pvalue)

    report = write_report(runs, tmp_path / "report", baseline="coreset", metrics=["val_accuracy"], tensorboard=False)
    table = (tmp_path / "report" / "area_val_accuracy.md").read_text()
    assert "Area under the val_accuracy curve" in table and f"{np.mean(other) - np.mean(base):+.4f}" in table
    assert report.area_markdown["val_accuracy"] == table
    csv_rows = (tmp_path / "report" / "area_val_accuracy.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + 4 + 5  # header, then one row per variant and seed
    assert "Area under the val_accuracy curve" in (tmp_path / "report" / "report.md").read_text()
