"""Library side of ``ist report``: numbers against the HDF5 files, bootstrap against
independent computations, figures by their drawn artists and pixels, theory against Monte Carlo."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from PIL import Image

from ist_cli.errors import UserError
from ist_cli.models.sketches import expected_clc, sketch_law
from ist_cli.models.theory import ist_bias_sq, ist_limit
from ist_cli.report import (
    bootstrap_ci,
    comm_figure,
    filter_runs,
    group_runs,
    load_runs,
    metric_figure,
    parse_where,
    runs_table,
    summarize,
    varying_keys,
)
from ist_cli.report.figures import figure_caption, png_bytes, theory_value
from ist_cli.report.metrics import run_value
from ist_cli.report.render import flat_rows, format_metric, terminal_table, title, to_json
from ist_cli.report.stats import bootstrap_band, t_band, t_ci
from tests.test_report_support import (
    h5_final,
    known_metrics,
    quadratic_problem,
    reference_bootstrap,
    small_sweep,
    write_run,
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return small_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def loaded(sweep: list[Path]):
    runs, skipped = load_runs([sweep[0].parent])
    assert skipped == []
    return runs


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_matches_independent_index_resampling() -> None:
    sample = [0.91, 0.87, 0.95, 0.89, 0.93]
    assert bootstrap_ci(sample) == pytest.approx(reference_bootstrap(sample), rel=1e-12, abs=1e-15)


def test_bootstrap_percentiles_match_the_exact_bootstrap_distribution() -> None:
    """n = 4: all 4^4 equally likely resamples give the exact distribution of the resampled
    mean; the Monte-Carlo percentiles must sit between its 1.5% and 3.5% (96.5% and 98.5%) quantiles."""
    x = np.array([1.0, 2.0, 4.0, 8.0])
    exact = np.sort([x[list(idx)].mean() for idx in itertools.product(range(4), repeat=4)])
    mean, low, high = bootstrap_ci(x)
    assert mean == pytest.approx(3.75)
    assert np.quantile(exact, 0.015) <= low <= np.quantile(exact, 0.035)
    assert np.quantile(exact, 0.965) <= high <= np.quantile(exact, 0.985)


def test_bootstrap_invariants() -> None:
    assert bootstrap_ci([2.5]) == (2.5, 2.5, 2.5)
    assert all(np.isnan(bootstrap_ci([])))
    rng = np.random.default_rng(7)
    widths = []
    for n in (5, 50, 500):
        sample = rng.normal(3.0, 1.0, n)
        mean, low, high = bootstrap_ci(sample)
        assert low <= mean <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    # width of a mean's CI scales like 1/sqrt(n): 2 * 1.96 / sqrt(500) ~ 0.175
    assert widths[2] == pytest.approx(2 * 1.96 / np.sqrt(500), rel=0.2)
    assert bootstrap_ci([1.0, 2.0, 3.0]) == bootstrap_ci([1.0, 2.0, 3.0])  # seeded


def test_band_equals_pointwise_bootstrap_and_skips_missing_points() -> None:
    curves = np.array([[1.0, 2.0, 5.0], [2.0, 4.0, np.nan], [3.0, 9.0, 7.0]])
    mean, low, high = bootstrap_band(curves, n_resamples=10_000)
    for j in range(2):  # columns with every run present: the scalar bootstrap, same draws
        assert (mean[j], low[j], high[j]) == pytest.approx(bootstrap_ci(curves[:, j]), rel=1e-12)
    assert mean[2] == pytest.approx(6.0)
    assert 5.0 <= low[2] <= mean[2] <= high[2] <= 7.0


# ----------------------------------------------------------------------------- tables
def test_summary_numbers_equal_the_hdf5_values(sweep: list[Path], loaded) -> None:
    groups = group_runs(loaded)
    assert sorted(g.label for g in groups) == ["algorithm=gd", "algorithm=ist"]
    summaries = summarize(groups, ["loss", "bytes"], ci="bootstrap")
    for summary in summaries:
        files = [p for p in sweep if p.name.startswith(summary.group.key["algorithm"] + "-")]
        assert sorted(str(r.path) for r in summary.group.runs) == sorted(map(str, files))
        # the bootstrap draws depend on the order of values: the group keeps sorted file order
        losses = [h5_final(Path(p), "loss") for p in sorted(map(str, files))]
        got = summary.metrics["loss"]
        assert (got.mean, got.low, got.high) == pytest.approx(reference_bootstrap(losses), rel=1e-12)
        assert got.values == losses
        assert summary.metrics["bytes"].mean == pytest.approx(h5_final(files[0], "bytes"))
        assert summary.metrics["bytes"].low == summary.metrics["bytes"].high  # same bytes every seed


def test_best_takes_min_of_losses_and_max_of_accuracies(tmp_path: Path) -> None:
    metrics = known_metrics("ist", 0)
    metrics["loss"] = np.array([3.0, 1.0, 2.0] + [2.5] * (len(metrics["round"]) - 3))
    metrics["test_accuracy"] = np.array([0.1, 0.9, 0.5] + [0.6] * (len(metrics["round"]) - 3))
    write_run(tmp_path, metrics=metrics)
    runs, _ = load_runs([tmp_path])
    best = summarize(group_runs(runs), ["loss", "test_accuracy"], "best")[0].metrics
    final = summarize(group_runs(runs), ["loss", "test_accuracy"], "final")[0].metrics
    assert (best["loss"].mean, best["test_accuracy"].mean) == (1.0, 0.9)
    assert (final["loss"].mean, final["test_accuracy"].mean) == (2.5, 0.6)


def test_sparse_metrics_use_last_measured_value_and_diverged_runs_are_excluded(tmp_path: Path) -> None:
    metrics = known_metrics("ist", 0)
    acc = np.full(len(metrics["round"]), np.nan)
    acc[::5] = np.linspace(0.2, 0.8, acc[::5].size)
    metrics["test_accuracy"] = acc
    write_run(tmp_path, seed=0, metrics=metrics)
    bad = known_metrics("ist", 1)
    bad["loss"][-1] = np.inf
    write_run(tmp_path, seed=1, metrics=bad, status="diverged")
    runs, _ = load_runs([tmp_path])
    (summary,) = summarize(group_runs(runs), ["loss", "test_accuracy"])
    assert summary.metrics["test_accuracy"].mean == pytest.approx(0.8)
    assert summary.diverged == 1
    assert summary.metrics["loss"].n == 1 and summary.metrics["loss"].excluded == 1
    assert summary.metrics["loss"].mean == pytest.approx(known_metrics("ist", 0)["loss"][-1])
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    data = json.loads(to_json([summary]), parse_constant=refuse)  # valid JSON: no NaN/Infinity tokens
    assert data["groups"][0]["metrics"]["loss"]["values"] == [pytest.approx(summary.metrics["loss"].mean), None]


def test_varying_keys_grouping_and_filters(sweep: list[Path], loaded) -> None:
    assert varying_keys(loaded) == ["algorithm", "seed"]
    table = runs_table(loaded, ["loss"])
    assert {row["path"]: row["loss"] for row in table} == {str(p): h5_final(p, "loss") for p in sweep}
    by_seed = group_runs(loaded, ["seed"])
    assert len(by_seed) == 4 and all(len(g.runs) == 2 for g in by_seed)
    assert group_runs(loaded, [])[0].label == "all runs"
    ist = filter_runs(loaded, parse_where(["algorithm=ist"], ["algorithm", "seed"]))
    assert {r.config["algorithm"] for r in ist} == {"ist"} and len(ist) == 4
    either = filter_runs(loaded, parse_where(["seed=1", "seed=2.0"], ["seed"]))
    assert sorted(r.config["seed"] for r in either) == [1, 1, 2, 2]
    with pytest.raises(UserError, match="unknown key 'colour'"):
        parse_where(["colour=red"], ["algorithm"])
    with pytest.raises(UserError, match="expected key=value"):
        parse_where(["algorithm"], ["algorithm"])
    with pytest.raises(UserError, match="unknown key 'nope'"):
        group_runs(loaded, ["nope"])
    assert flat_rows(summarize(group_runs(loaded), ["loss"]))[0]["seeds"] == "0 1 2 3"


# ----------------------------------------------------------------------------- figures
def plot_pixels(fig) -> np.ndarray:
    """RGB pixels inside the axes of the PNG (labels and ticks cropped away)."""
    image = np.asarray(Image.open(io.BytesIO(png_bytes(fig, dpi=fig.dpi))).convert("RGB"), dtype=np.float64)
    box = fig.axes[0].get_window_extent()
    height = image.shape[0]
    return image[int(height - box.y1) + 3:int(height - box.y0) - 3, int(box.x0) + 3:int(box.x1) - 3]


def pixel_std(fig) -> float:
    return float(plot_pixels(fig).mean(axis=2).std())


def coloured_fraction(fig) -> float:
    """Share of plot pixels in colour (data); axes, grid and text are black, grey or white."""
    pixels = plot_pixels(fig)
    return float(((pixels.max(axis=2) - pixels.min(axis=2)) > 40).mean())


def test_metric_figure_draws_one_line_and_band_per_group(loaded) -> None:
    groups = group_runs(loaded)
    fig = metric_figure(groups, "loss", x="round")
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if line.get_gid() == "mean"]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_gid() == "ci"]
    assert len(lines) == 2 and len(bands) == 2
    assert ax.get_yscale() == "log"  # the known loss spans four decades
    for line, group in zip(lines, groups, strict=True):
        paths = [r.path for r in group.runs]
        with_h5 = []
        for p in paths:
            with h5py.File(p, "r") as handle:
                with_h5.append(handle["metrics/loss"][()])
        np.testing.assert_allclose(line.get_ydata(), np.mean(with_h5, axis=0), rtol=1e-12)
    assert pixel_std(fig) > 10.0 and coloured_fraction(fig) > 0.01
    blank = metric_figure([], "loss")
    assert pixel_std(blank) < pixel_std(fig) / 2 and coloured_fraction(blank) == 0.0


def test_x_axis_bytes_and_sim_time_use_the_logged_series(loaded) -> None:
    groups = group_runs(loaded)
    group = groups[0]
    m = known_metrics(group.key["algorithm"], 0)
    fig = metric_figure([group], "f_gap", x="bytes", logx=False)
    (line,) = [line for line in fig.axes[0].get_lines() if line.get_gid() == "mean"]
    np.testing.assert_allclose(line.get_xdata(), m["bytes_up"] + m["bytes_down"])
    assert fig.axes[0].get_yscale() == "linear"  # f_gap spans less than two decades
    fig = metric_figure([group], "f_gap", x="sim_time", logx=False)
    (line,) = [line for line in fig.axes[0].get_lines() if line.get_gid() == "mean"]
    np.testing.assert_allclose(line.get_xdata(), m["compute_time"] + m["comm_time_model"])
    # by default both span decades on a log axis, where x = 0 has no place
    fig = metric_figure([group], "f_gap", x="bytes")
    (line,) = [line for line in fig.axes[0].get_lines() if line.get_gid() == "mean"]
    assert fig.axes[0].get_xscale() == "log"
    np.testing.assert_allclose(line.get_xdata(), (m["bytes_up"] + m["bytes_down"])[1:])


def test_single_run_group_has_a_line_but_no_band(tmp_path: Path) -> None:
    write_run(tmp_path)
    runs, _ = load_runs([tmp_path])
    ax = metric_figure(group_runs(runs), "loss").axes[0]
    assert [line.get_gid() for line in ax.get_lines()] == ["mean"]
    assert not [c for c in ax.collections if c.get_gid() == "ci"]


def test_comm_figure_has_one_point_per_group_in_the_groups_colour(loaded) -> None:
    groups = group_runs(loaded)
    fig = comm_figure(groups)
    ax = fig.axes[0]
    assert len(ax.containers) == 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["GD (n = 4)", "IST (n = 4)"]
    points = sorted((c.lines[0].get_xdata()[0], c.lines[0].get_ydata()[0]) for c in ax.containers)
    assert points[0][0] == pytest.approx(96 * 2.5 * 20)  # ist: final bytes_up + bytes_down
    assert coloured_fraction(fig) > 0.001
    # one colour per group in every figure of a report
    curves = [line for line in metric_figure(groups, "loss").axes[0].get_lines() if line.get_gid() == "mean"]
    point_colours = [to_hex(c.lines[0].get_color()) for c in ax.containers]
    assert point_colours == [to_hex(line.get_color()) for line in curves]
    assert len(set(point_colours)) == 2


def test_theory_line_sits_at_the_predicted_bias(loaded) -> None:
    groups = group_runs(loaded)
    fig = metric_figure(groups, "dist_to_opt_sq")
    theory = [line for line in fig.axes[0].get_lines() if line.get_gid() == "theory"]
    assert len(theory) == 1  # IST only: gd has no bias
    problem = quadratic_problem()
    expected = ist_bias_sq(problem["L"], problem["b"], 4, "perm")
    assert theory[0].get_ydata()[0] == pytest.approx(expected, rel=1e-12)
    # independent: x_inf from M̄ built entry by entry (n = 4, d = 8, q = 2)
    L, b = problem["L"], problem["b"]
    n, d, q = 4, 8, 2
    M = np.zeros((d, d))
    for i in range(n):
        for j in range(d):
            for k in range(d):
                M[j, k] += (n * L[i, j, j] if j == k else n * n * q * (q - 1) / (d * (d - 1)) * L[i, j, k]) / n
    gap = np.linalg.solve(M, b.mean(0)) - problem["x_star"]
    assert expected == pytest.approx(gap @ gap, rel=1e-10)
    assert expected > 1e-3  # heterogeneous problem: a real bias


def test_theory_does_not_apply_to_local_steps_or_identity(tmp_path: Path) -> None:
    problem = quadratic_problem()
    paths = [write_run(tmp_path, seed=0, problem=problem, local_steps=3),
             write_run(tmp_path, seed=1, problem=problem, sketch="identity"),
             write_run(tmp_path, seed=2, problem=problem, sketch="rand", sketch_q=3)]
    runs, _ = load_runs(paths)
    by_path = {r.path: theory_value(r) for r in runs}
    assert by_path[paths[0]] is None and by_path[paths[1]] is None
    assert by_path[paths[2]] == pytest.approx(ist_bias_sq(problem["L"], problem["b"], 4, "rand", 3))


# ----------------------------------------------------------------------------- theory
def _mc_check(samples: np.ndarray, exact: np.ndarray) -> None:
    mean = samples.mean(axis=0)
    se = samples.std(axis=0) / np.sqrt(samples.shape[0])
    assert np.all(np.abs(mean - exact) <= 5 * se + 1e-12)


def test_expected_clc_perm_matches_monte_carlo() -> None:
    n, q = 3, 2
    d = n * q
    L = quadratic_problem(n=n, d=d)["L"]
    rng = np.random.default_rng(11)
    samples = {i: [] for i in range(n)}
    for _ in range(20_000):
        perm = rng.permutation(d)
        for i in range(n):
            c = np.zeros(d)
            c[perm[i * q:(i + 1) * q]] = n
            samples[i].append(c[:, None] * L[i] * c[None, :])
    exact = expected_clc(sketch_law("perm", L), L)
    for i in range(n):
        _mc_check(np.array(samples[i]), exact[i])


def test_expected_clc_rand_matches_monte_carlo() -> None:
    n, d, q = 2, 6, 2  # d/q = 3 differs from n: the scale must be d/q
    Ls = quadratic_problem(n=n, d=d)["L"]
    L = Ls[0]
    rng = np.random.default_rng(12)
    draws = []
    for _ in range(30_000):
        c = np.zeros(d)
        c[rng.choice(d, q, replace=False)] = d / q
        draws.append(c[:, None] * L * c[None, :])
    _mc_check(np.array(draws), expected_clc(sketch_law("rand", Ls, q), Ls)[0])
    assert np.array_equal(expected_clc(sketch_law("identity", Ls), Ls), Ls)


def test_ist_limit_identity_is_the_optimum_and_errors_are_named() -> None:
    problem = quadratic_problem()
    np.testing.assert_allclose(ist_limit(problem["L"], problem["b"], 4, "identity"), problem["x_star"], rtol=1e-10)
    with pytest.raises(ValueError, match="divisible"):
        ist_limit(problem["L"][:3], problem["b"][:3], 3, "perm")
    with pytest.raises(ValueError, match="unknown sketch"):
        ist_limit(problem["L"], problem["b"], 4, "topk")


def test_mixed_models_vary_by_model_not_by_model_specific_keys(tmp_path: Path) -> None:
    write_run(tmp_path, seed=0)
    write_run(tmp_path, seed=0, model="mlp", metrics={**known_metrics("ist", 0),
                                                      "test_accuracy": np.linspace(0.1, 0.9, 21)})
    runs, _ = load_runs([tmp_path])
    keys = varying_keys(runs)
    assert keys[0] == "model" and "dim" not in keys and "hidden" not in keys
    groups = group_runs(runs)
    assert sorted(g.key["model"] for g in groups) == ["mlp", "quadratic"]
    acc = {g.key["model"]: s.metrics["test_accuracy"] for g, s in
           zip(groups, summarize(groups, ["test_accuracy"]), strict=True)}
    assert acc["mlp"].mean == pytest.approx(0.9) and acc["quadratic"].n == 0


def test_theory_line_reads_the_problem_lazily(sweep: list[Path]) -> None:
    runs, _ = load_runs([sweep[0].parent], load_problem=False)
    assert all(not run.problem for run in runs)
    fig = metric_figure(group_runs(runs), "dist_to_opt_sq")
    (line,) = [line for line in fig.axes[0].get_lines() if line.get_gid() == "theory"]
    problem = quadratic_problem()
    assert line.get_ydata()[0] == pytest.approx(ist_bias_sq(problem["L"], problem["b"], 4, "perm"), rel=1e-12)


# ----------------------------------------------------------------------------- CI methods
def test_t_interval_of_three_values_equals_scipys() -> None:
    from scipy import stats

    values = [0.91, 0.87, 0.95]
    expected = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    mean, low, high = t_ci(values)
    assert mean == pytest.approx(np.mean(values), rel=1e-15)
    assert (low, high) == pytest.approx(expected, rel=1e-12)
    # by hand: t_{0.975, 2} = 4.302652729...; s = 0.04; half-width 4.3027 * 0.04 / sqrt(3)
    assert high - mean == pytest.approx(4.302652729749464 * 0.04 / np.sqrt(3), rel=1e-9)
    assert t_ci([2.5]) == (2.5, 2.5, 2.5)
    # the band of a matrix of curves is the pointwise t-interval
    curves = np.array([[1.0, 2.0], [2.0, 4.0], [4.0, 9.0]])
    mean_b, low_b, high_b = t_band(curves)
    for j in range(2):
        assert (mean_b[j], low_b[j], high_b[j]) == pytest.approx(t_ci(curves[:, j]), rel=1e-12)


def test_default_is_t_and_every_caption_names_the_method(loaded) -> None:
    groups = group_runs(loaded)
    summaries = summarize(groups, ["loss"])
    assert summaries[0].ci == "t"
    losses = [run_value(run, "loss") for run in groups[0].runs]
    got = summaries[0].metrics["loss"]
    assert (got.mean, got.low, got.high) == pytest.approx(t_ci(losses), rel=1e-12)
    assert "95% Student-t CI" in title(summaries)
    assert json.loads(to_json(summaries))["ci"]["method"] == "t"
    assert "Student-t" in figure_caption(metric_figure(groups, "loss"), "loss_vs_round")
    boot = summarize(groups, ["loss"], ci="bootstrap")
    assert "percentile bootstrap" in title(boot)
    bca = summarize(groups, ["loss"], ci="bca")
    assert "BCa" in title(bca)
    assert bca[0].metrics["loss"].low <= bca[0].metrics["loss"].mean <= bca[0].metrics["loss"].high
    # theory is captioned only where a theory line is drawn
    assert "theory" not in figure_caption(metric_figure(groups, "loss"), "loss_vs_round")
    assert "theory" in figure_caption(metric_figure(groups, "dist_to_opt_sq"), "dist_to_opt_sq_vs_round")


def test_groups_sort_numerically_and_runs_by_seed(tmp_path: Path) -> None:
    for lr in (0.1, 0.02, 1.0):
        for seed in (10, 2):
            write_run(tmp_path, seed=seed, lr=lr)
    runs, _ = load_runs([tmp_path])
    groups = group_runs(runs)
    assert [g.key["lr"] for g in groups] == [0.02, 0.1, 1.0]
    assert all(g.seeds == [2, 10] for g in groups)


def test_narrow_terminal_gets_every_number_whole(loaded) -> None:
    from rich.console import Console

    summaries = summarize(group_runs(loaded), ["loss", "dist_to_opt_sq", "f_gap", "grad_norm_sq", "bytes"])
    buffer = io.StringIO()
    Console(file=buffer, width=40).print(terminal_table(summaries, 40))
    text = buffer.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 40
    for s in summaries:
        for metric, stats in s.metrics.items():
            assert format_metric(metric, stats.mean) in text
