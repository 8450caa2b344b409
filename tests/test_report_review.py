"""What a reviewer checks in a report: intervals inside each metric's range, comparisons equal
to SciPy's tests and a numpy probability of improvement recomputed from the HDF5 files,
Holm's correction on a hand case, the K(B) fit's bounds, the steps axis, the best-lr choice,
and the layout of every figure (legends outside the axes, no offset text, human units)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import stats as scipy_stats

from ist_cli.config import config_hash
from ist_cli.io.metric_info import NONNEGATIVE, PROPORTION, metric_range
from ist_cli.io.runfile import RunFileWriter
from ist_cli.report.choices import CI_METHODS
from ist_cli.report.compare import holm, probability_of_improvement
from ist_cli.report.figures import report_figures
from ist_cli.report.load import load_runs
from ist_cli.report.metrics import X_AXES
from ist_cli.report.stats import bootstrap_band, summarize_values, t_band
from ist_cli.report.table import group_runs
from ist_cli.study.fit import fit_steps
from ist_cli.sweep.spec import load_sweep
from tests.helpers import ist
from tests.test_report_support import ENV, small_sweep

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- intervals
def random_samples(rng: np.random.Generator, bounds: tuple[float, float]) -> list[np.ndarray]:
    """Random run sets: spread, all equal, all at a bound, most at a bound, near a bound."""
    lo, hi = bounds
    top = hi if np.isfinite(hi) else 1e6
    samples = []
    for _ in range(40):
        n = int(rng.integers(1, 9))
        kind = rng.integers(0, 5)
        if kind == 0:
            x = rng.uniform(lo, top, n)
        elif kind == 1:
            x = np.full(n, rng.uniform(lo, top))
        elif kind == 2:
            x = np.full(n, lo if rng.random() < 0.5 or not np.isfinite(hi) else hi)
        elif kind == 3:
            x = np.full(n, lo)
            x[0] = rng.uniform(lo, top)
        else:
            x = lo + (top - lo) * rng.beta(0.2, 5.0, n)  # close to the lower bound
            if np.isfinite(hi) and rng.random() < 0.5:
                x = hi - (x - lo)  # close to the upper bound
        samples.append(x)
    return samples


@pytest.mark.parametrize("bounds", [PROPORTION, NONNEGATIVE], ids=["proportion", "nonnegative"])
@pytest.mark.parametrize("ci", CI_METHODS)
def test_no_interval_leaves_the_metric_range(bounds: tuple[float, float], ci: str) -> None:
    rng = np.random.default_rng([7, len(ci), int(np.isfinite(bounds[1]))])
    for x in random_samples(rng, bounds):
        options = {} if ci == "t" else {"n_resamples": 500}
        s = summarize_values(x, ci, bounds=bounds, **options)
        assert bounds[0] <= s.low <= s.mean + 1e-12 and s.mean - 1e-12 <= s.high <= bounds[1], (ci, x, s)
        if np.ptp(x) == 0:  # every value the same (at a bound or not): the interval is the point
            assert s.low == pytest.approx(x[0]) and s.high == pytest.approx(x[0])
    curves = np.stack([np.concatenate([x, np.full(8 - x.size, np.nan)]) for x in random_samples(rng, bounds)], 1)
    for mean, low, high in (t_band(curves, bounds=bounds), bootstrap_band(curves, n_resamples=300, bounds=bounds)):
        ok = np.isfinite(mean)
        assert np.all(low[ok] >= bounds[0]) and np.all(high[ok] <= bounds[1])


def test_metric_ranges_are_declared() -> None:
    assert metric_range("test_accuracy") == metric_range("val_error") == (0.0, 1.0)
    assert metric_range("dist_to_opt_sq") == metric_range("bytes") == metric_range("test_loss") == NONNEGATIVE
    assert metric_range("loss")[0] == -np.inf  # the quadratic's f(x) can be negative


def test_the_t_interval_of_a_bounded_metric_is_the_delta_method_on_its_scale() -> None:
    """logit for a proportion, log for a positive quantity (docs/report.md), against a numpy
    computation of the same formula."""
    x = np.array([0.97, 0.99, 1.0])
    m, se = x.mean(), x.std(ddof=1) / np.sqrt(3)
    t = scipy_stats.t.ppf(0.975, 2)
    z, dz = np.log(m / (1 - m)), t * se / (m * (1 - m))
    s = summarize_values(x, "t", bounds=PROPORTION)
    np.testing.assert_allclose([s.low, s.high], 1 / (1 + np.exp(-np.array([z - dz, z + dz]))), rtol=1e-12)
    y = np.array([20.0, 120.0, 60.0])
    m, se = y.mean(), y.std(ddof=1) / np.sqrt(3)
    s = summarize_values(y, "t", bounds=NONNEGATIVE)
    np.testing.assert_allclose([s.low, s.high], m * np.exp(np.array([-1, 1]) * t * se / m), rtol=1e-12)


def test_report_tables_carry_the_few_seeds_note_and_stay_in_range(tmp_path: Path) -> None:
    for seed in range(3):  # test accuracy 1.0 twice: a plain t-interval would pass 1
        write_mlp_run(tmp_path, "ist", seed, accuracy=[0.5, 0.99, 1.0, 1.0][seed + 1])
    result = ist("report", str(tmp_path), "--format", "md", "--metric", "test_accuracy")
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| 3 |")]  # one group of 3 runs
    assert "(n = 3 < 5)" in row
    data = json.loads(ist("report", str(tmp_path), "--format", "json", "--metric", "test_accuracy").stdout)
    stats = data["groups"][0]["metrics"]["test_accuracy"]
    assert 0 <= stats["ci_low"] <= stats["ci_high"] <= 1


# ----------------------------------------------------------------------------- the K(B) fit
def test_the_fit_never_reports_a_negative_bound() -> None:
    rng = np.random.default_rng(5)
    b = np.array([2, 4, 8, 16, 32, 64])
    for repetition in range(60):
        # steps that rise with B (a negative slope) or fall faster than 1/B (a negative intercept)
        shape = rng.choice(["rising", "steep", "noise"])
        base = {"rising": 50 + 3 * b, "steep": 5000 / b**1.6, "noise": 100 * np.exp(rng.normal(0, 1, b.size))}[shape]
        trials = [v * (1 + rng.random(4)) for v in base]
        fit = fit_steps(b, trials, resamples=200, seed=repetition)
        assert fit.k_min >= 0 and fit.b_c >= 0, (shape, fit)
        assert min(fit.k_min_ci) >= 0 and min(fit.b_c_ci) >= 0, (shape, fit)
        assert fit.dof == b.size - 2


def test_two_batch_sizes_get_no_ci_and_a_one_line_reason() -> None:
    fit = fit_steps([8, 16], [np.array([100.0, 130.0]), np.array([90.0, 95.0])])
    assert np.isnan(fit.k_min_ci).all() and np.isnan(fit.b_c_ci).all()
    assert fit.dof == 0 and "\n" not in fit.no_ci and "2 batch sizes" in fit.no_ci and "no CI" in fit.no_ci
    assert fit.k_min >= 0 and fit.b_c >= 0


# ----------------------------------------------------------------------------- comparisons
def h5_value(path: Path, metric: str) -> float:
    with h5py.File(path, "r") as handle:
        values = handle[f"metrics/{metric}"][()]
    return float(values[~np.isnan(values)][-1])


def noisy_runs(directory: Path, algorithm: str, seeds: tuple[int, ...]) -> list[Path]:
    """Run files whose final loss and f_gap vary from seed to seed (and tie once)."""
    from tests.test_report_support import known_metrics, write_run

    paths = []
    for seed in seeds:
        metrics = known_metrics(algorithm, seed)
        rng = np.random.default_rng([seed, len(algorithm)])
        metrics["loss"] = metrics["loss"] * (1 + 0.5 * rng.random())
        metrics["f_gap"] = np.round(metrics["f_gap"] * (1 + 0.2 * rng.random()), 1)  # coarse: ties happen
        paths.append(write_run(directory, algorithm=algorithm, seed=seed, metrics=metrics))
    return paths


def test_compare_matches_scipy_and_a_numpy_probability_of_improvement(tmp_path: Path) -> None:
    paths = noisy_runs(tmp_path, "ist", (0, 1, 2, 3)) + noisy_runs(tmp_path, "gd", (0, 1, 2, 3))  # pair by seed
    result = ist("report", str(tmp_path), "--format", "json", "--metric", "loss", "--metric", "f_gap",
                 "--compare", "algorithm", "--baseline", "gd")
    assert result.returncode == 0, result.stderr
    comparisons = json.loads(result.stdout)["comparisons"]
    assert {c["metric"] for c in comparisons} == {"loss", "f_gap"}
    for c in comparisons:
        x = np.array([h5_value(p, c["metric"]) for p in paths if p.name.startswith("ist-")])
        y = np.array([h5_value(p, c["metric"]) for p in paths if p.name.startswith("gd-")])
        test = scipy_stats.ttest_rel(x, y)
        assert c["test"] == "paired t"
        assert c["p"] == pytest.approx(test.pvalue, rel=1e-12) and c["statistic"] == pytest.approx(test.statistic)
        ci = test.confidence_interval(0.95)
        assert [c["low"], c["high"]] == pytest.approx([ci.low, ci.high], rel=1e-12)
        assert c["difference"] == pytest.approx(x.mean() - y.mean())
        wins = sum((xi < yj) + 0.5 * (xi == yj) for xi in x for yj in y)  # lower is better for both
        assert c["prob_improvement"] == pytest.approx(wins / (x.size * y.size))
    assert sorted(c["p_holm"] for c in comparisons) == pytest.approx(sorted(holm([c["p"] for c in comparisons])))


def test_compare_uses_welch_when_seeds_do_not_pair(tmp_path: Path) -> None:
    ist_paths = noisy_runs(tmp_path, "ist", (0, 1, 2))
    gd_paths = noisy_runs(tmp_path, "gd", (3, 4, 5, 6))
    result = ist("report", str(tmp_path), "--format", "json", "--metric", "loss", "--compare", "algorithm",
                 "--baseline", "gd", "--aggregate", "iqm")
    assert result.returncode == 0, result.stderr
    (c,) = json.loads(result.stdout)["comparisons"]
    x = np.array([h5_value(p, "loss") for p in ist_paths])
    y = np.array([h5_value(p, "loss") for p in gd_paths])
    test = scipy_stats.ttest_ind(x, y, equal_var=False)
    assert c["test"] == "Welch t" and c["p"] == pytest.approx(test.pvalue, rel=1e-12)
    assert c["difference"] == pytest.approx(scipy_stats.trim_mean(x, 0.25) - scipy_stats.trim_mean(y, 0.25))
    assert c["prob_improvement"] == pytest.approx(np.mean(x[:, None] < y[None, :]) + 0.5 * np.mean(x[:, None] == y[None, :]))


def test_holm_on_a_hand_case() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> raised to 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, float("nan"), 0.4]) == pytest.approx([0.8, float("nan"), 0.8], nan_ok=True)
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_probability_of_improvement_counts_ties_as_half() -> None:
    assert probability_of_improvement(np.array([1.0, 2.0]), np.array([1.0, 0.0])) == pytest.approx(0.875)
    assert probability_of_improvement(np.array([1.0]), np.array([2.0]), higher_better=False) == 1.0


# ----------------------------------------------------------------------------- fair axes
def write_mlp_run(directory: Path, algorithm: str, seed: int, *, accuracy: float = 0.9, lr: float = 0.05,
                  val_error: float | None = None, sweep: str = "ist_vs_dp_digits.toml", workers: int = 2) -> Path:
    """A run file with the config ``sweep`` gives (algorithm, workers, seed), written by the real
    writer; ``/metrics/step`` as the runner logs it (round × local_steps, 1 per round for dp)."""
    planned = next(r for r in load_sweep(ROOT / "experiments" / sweep).runs
                   if r.config["algorithm"] == algorithm and r.config["seed"] == seed
                   and r.config.get("workers") == workers)
    config = {**planned.config, "lr": lr}
    per_round = 1 if algorithm == "dp" else config["local_steps"]
    path = directory / f"{algorithm}-{seed}-{config_hash(config, 6)}.h5"
    writer = RunFileWriter(path, run_id=config_hash(config), config=config, env=ENV, seed=seed, version="0.1.0")
    for r in range(0, 11, 5):
        row = {"round": float(r), "step": float(r * per_round), "test_accuracy": accuracy * r / 10,
               "bytes_up": 1e6 * r * (1 if algorithm == "ist" else 4), "bytes_down": 1e6 * r,
               "compute_time": 0.5 * r, "comm_time_model": 2.0 * r, "wall_time": 1.0 + r,
               "loss": 2.0 / (1 + r)}
        if val_error is not None:
            row["val_error"] = val_error + 0.01 * (10 - r)
        writer.append_metrics(row)
    return writer.close("completed")


def test_x_steps_puts_ist_and_dp_on_one_axis(tmp_path: Path) -> None:
    paths = [write_mlp_run(tmp_path, a, s) for a in ("ist", "dp") for s in (0, 1)]
    runs, _ = load_runs([tmp_path])
    groups = group_runs(runs)
    for x, scale in (("steps", 1.0), ("samples", 32.0 * 2)):  # samples = steps × batch_size × workers
        fig = report_figures(groups, ["test_accuracy"], x)[f"test_accuracy_vs_{x}"]
        (ax,) = fig.axes
        assert ax.get_xscale() == "log"
        lines = {line.get_label().split(" (")[0].split(", ")[0]: line.get_xdata() for line in ax.get_lines()
                 if line.get_gid() == "mean"}
        assert set(lines) == {"IST", "DP"}
        for name, prefix in (("IST", "ist-"), ("DP", "dp-")):
            with h5py.File(next(p for p in paths if p.name.startswith(prefix)), "r") as handle:
                steps = handle["metrics/step"][()]
            np.testing.assert_allclose(lines[name], steps[steps > 0] * scale)  # log axis by default: no 0
        assert lines["IST"].max() == 10 * lines["DP"].max()  # 10 local steps per round against 1


def test_best_lr_per_method_is_the_one_h5py_recomputes(tmp_path: Path) -> None:
    val = {("ist", 0.01): 0.10, ("ist", 0.03): 0.05, ("ist", 0.1): 0.07, ("dp", 0.01): 0.2, ("dp", 0.03): 0.12,
           ("dp", 0.1): 0.11}
    for (algorithm, lr), error in val.items():
        for seed in (0, 1):
            write_mlp_run(tmp_path, algorithm, seed, lr=lr, val_error=error + 0.02 * seed,
                          sweep="ist_vs_dp_digits_lr.toml", workers=4)
    result = ist("report", str(tmp_path), "--format", "json", "--metric", "test_accuracy",
                 "--best-by", "val_error", "--over", "lr")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    expected = {}
    for path in tmp_path.glob("*.h5"):
        with h5py.File(path, "r") as handle:
            config = json.loads(handle["config"][()])
            expected.setdefault(config["algorithm"], {}).setdefault(config["lr"], []).append(
                float(handle["metrics/val_error"][-1]))
    for choice in document["best_by"]["choices"]:
        scores = expected[choice["context"]["algorithm"]]
        assert choice["winner"] == min(scores, key=lambda lr: np.mean(scores[lr]))
    edges = {c["context"]["algorithm"]: c["on_edge"] for c in document["best_by"]["choices"]}
    assert edges == {"ist": False, "dp": True}  # dp's best lr is the largest tried
    assert {g["key"]["lr"] for g in document["groups"]} == {0.03, 0.1}  # only the winners are reported


# ----------------------------------------------------------------------------- figures
def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def check_figure(name: str, fig, units: dict[str, str]) -> None:
    """Legends outside every axes, no offset/multiplier text, human units on byte/time axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [ax.get_window_extent(renderer) for ax in fig.axes]
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(fig.legends) <= 1, name
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(overlaps(box, axes_box) for axes_box in boxes), name
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            assert axis.get_offset_text().get_text() == "", (name, axis.get_offset_text().get_text())
            labels = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
            assert not any("times" in t or "×" in t or "^" in t for t in labels), (name, labels)
            unit = units.get(axis.get_label().get_text())
            if unit and labels:
                assert all(t == "0" or t.split(" ")[-1] in unit for t in labels), (name, labels)


@pytest.mark.slow
def test_every_report_figure_has_its_legend_outside_and_human_units(tmp_path: Path) -> None:
    from ist_cli.report.metrics import X_LABELS

    mlp = tmp_path / "mlp"
    mlp.mkdir()
    for a in ("ist", "dp", "local-sgd"):
        for s in (0, 1):
            write_mlp_run(mlp, a, s, accuracy=0.9 + 0.01 * s)
    quadratic = tmp_path / "quadratic"
    quadratic.mkdir()
    small_sweep(quadratic, seeds=(0, 1))
    units = {X_LABELS["bytes"]: ("B", "kB", "MB", "GB"), "bytes communicated (all workers)": ("B", "kB", "MB", "GB"),
             X_LABELS["time"]: ("s", "min", "h"), X_LABELS["sim_time"]: ("s", "min", "h")}
    drawn = 0
    for directory in (mlp, quadratic):
        runs, _ = load_runs([directory])
        groups = group_runs(runs)
        metrics = ["loss", "test_accuracy", "f_gap", "dist_to_opt_sq", "sim_time"]
        for x in X_AXES:
            for name, fig in report_figures(groups, metrics, x).items():
                check_figure(f"{directory.name}/{name}", fig, units)
                drawn += 1
    assert drawn >= 20


def test_study_figures_share_the_run_figures_layout(tmp_path: Path) -> None:
    from ist_cli.report.study import study_figures
    from ist_cli.study.results import load_study_result
    from tests.study_support import fabricate, make_study

    spec = make_study()
    fabricate(tmp_path, spec)
    for name, fig in study_figures(load_study_result(tmp_path, resamples=50)).items():
        check_figure(name, fig, {})
        assert not fig.axes[0].get_title()  # captions, not titles, as on the run pages
        labels = [t.get_text() for t in fig.axes[0].xaxis.get_ticklabels() if t.get_text()]
        assert labels and all(t.isdigit() for t in labels), labels  # 2, 8, 32: not 2^5
        if name == "study_steps_normalised":  # ratios: 1, 0.5, 0.1 (1-2-5 steps), not 0.0625 and 0.01562
            ticks = [float(t.get_text()) for t in fig.axes[0].yaxis.get_ticklabels() if t.get_text()]
            mantissas = [v / 10 ** np.floor(np.log10(v)) for v in ticks]
            assert ticks and all(np.isclose(m, (1, 2, 3, 5)).any() for m in mantissas), ticks


# ----------------------------------------------------------------------------- labels
def test_labels_from_the_option_and_the_sweep_file(tmp_path: Path) -> None:
    from ist_cli.errors import UserError
    from ist_cli.report.labels import group_label, merged, parse_label_options, plural, sweep_labels
    from ist_cli.sweep.manifest import Manifest

    assert group_label({"algorithm": "local-sgd", "workers": 1}, n=4) == "local SGD, 1 worker (n = 4)"
    assert group_label({"algorithm": "ist", "lr": 0.1}) == "IST, lr = 0.1"
    assert group_label({"algorithm": "gd", "sketch": None, "lr": 0.1}) == "GD, lr = 0.1"  # GD has no sketch
    assert group_label({"algorithm": "gd", "sketch": None}, merged({"sketch": {"-": "no sketch"}})) == "GD, no sketch"
    assert plural(1, "run") == "1 run" and plural(2, "model") == "2 models"
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text('name = "s"\n[base]\nmodel = "quadratic"\nrounds = 2\n[grid]\nalgorithm = ["ist", "gd"]\n'
                          '[labels.algorithm]\nist = "IST (ours)"\ngd = "plain GD"\n')
    out = tmp_path / "out"
    Manifest(out).open(load_sweep(sweep_file), force=False)
    labels = merged(sweep_labels([out]), parse_label_options(["algorithm=gd:GD baseline"]))
    assert group_label({"algorithm": "ist"}, labels) == "IST (ours)"
    assert group_label({"algorithm": "gd"}, labels) == "GD baseline"  # --label wins over the file
    with pytest.raises(UserError, match="--label"):
        parse_label_options(["algorithm=ist"])
    bad = tmp_path / "bad.toml"
    bad.write_text('[base]\nmodel = "quadratic"\n[labels]\nalgorithm = "IST"\n')
    with pytest.raises(UserError, match="labels.algorithm"):
        load_sweep(bad)


@pytest.mark.parametrize("args, expected", [
    (["--compare", "algorithm"], "--compare KEY needs --baseline VALUE"),
    (["--baseline", "gd"], "--baseline: 'gd' is not allowed alone; expected --compare KEY or --target too"),
    (["--compare", "algorithm", "--baseline", "adam"], "--baseline: 'adam' is not a value of algorithm; allowed: gd, ist"),
    (["--compare", "colour", "--baseline", "red"], "--compare: unknown key 'colour'"),
    (["--best-by", "val_error", "--over", "lr"], "--best-by: unknown metric 'val_error'"),
    (["--label", "algorithm=ist"], "--label: 'ist' in 'algorithm=ist' is not allowed; expected VALUE:LABEL"),
])
def test_bad_comparison_options_are_one_line_errors(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "runs").mkdir()
    small_sweep(tmp_path / "runs", seeds=(0, 1))
    result = ist("report", str(tmp_path / "runs"), *args, "--figures", str(tmp_path / "figs"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("ist: error: ") and expected in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "figs").exists()  # nothing created


def test_a_methods_own_settings_do_not_split_the_comparison(tmp_path: Path) -> None:
    """DP's local_steps is pinned to 1 (IST's is 10): that setting belongs to the method, so
    IST is still compared with DP, per number of workers."""
    from ist_cli.report.compare import compare

    for algorithm in ("ist", "dp"):
        for seed in (0, 1, 2):
            for workers in (2, 4):
                write_mlp_run(tmp_path, algorithm, seed, accuracy=0.9 + 0.01 * seed + (algorithm == "ist") * 0.02,
                              workers=workers)
    runs, _ = load_runs([tmp_path])
    assert {run.config["local_steps"] for run in runs if run.config["algorithm"] == "dp"} == {1}
    comparisons = compare(runs, ["test_accuracy"], "algorithm", "dp")
    assert [(c.context, c.value, c.baseline) for c in comparisons] == [
        ({"workers": 2}, "ist", "dp"), ({"workers": 4}, "ist", "dp")]


def test_a_methods_own_setting_gets_no_line_style() -> None:
    """Colour by method, line style by workers, even though DP's local_steps (1) differs from IST's (10)."""
    from ist_cli.report.figures import key_styles

    keys = [{"algorithm": a, "local_steps": steps, "workers": n} for a, steps in (("dp", 1), ("ist", 10))
            for n in (2, 4)]
    (dp2, dp4, ist2, ist4) = key_styles(keys)
    assert dp2[0] == dp4[0] != ist2[0] == ist4[0]
    assert dp2[1] == ist2[1] != dp4[1] == ist4[1]
