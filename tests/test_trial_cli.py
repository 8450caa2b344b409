"""The options of one study trial end to end: `ist run` as a subprocess, checked against the HDF5 it wrote
and against numpy written here (SNIP scores, sparse byte counts, steps-to-result)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ist_cli.config import resolve_config
from ist_cli.data import dataset_from_config
from ist_cli.models.mlp import initial_params, net_layout
from ist_cli.models.subnet import draw_partition, neuron_index
from tests.helpers import files_in, ist, one_error_line
from tests.test_mlp_kernels import ref_grad, ref_loss

SMALL = ["--dataset", "synthetic", "--synthetic-samples", "500", "--synthetic-features", "8",
         "--synthetic-classes", "3", "--hidden", "12,10", "--workers", "2", "--batch-size", "16"]


def run(tmp_path, name, *args):
    ist("run", "--model", "mlp", *args, "--out", str(tmp_path), "--name", name, "--quiet", check=True, timeout=300)
    return h5py.File(tmp_path / f"{name}.h5", "r")


def flat(layout, group):
    vector = np.zeros(layout.size)
    for key, view in layout.named(vector).items():
        view[...] = group[key][...]
    return vector


@pytest.mark.slow
def test_snip_mask_is_the_top_kappa_of_numpy_scores(tmp_path):
    args = [*SMALL, "--algorithm", "single", "--dtype", "float64", "--norm", "none", "--sparsity", "0.8",
            "--snip-batches", "all", "--rounds", "1", "--local-steps", "1"]
    with run(tmp_path, "snip", *args) as f:
        mask = f["mask"]
        config = resolve_config({"model": "mlp", **_pairs(args)})
        data = dataset_from_config(config)
        widths = [data.n_features, 12, 10, data.n_classes]
        layout = net_layout(widths, False)
        w0 = initial_params(layout, 0, np.dtype("float64"))
        named = layout.named(w0)
        grads = ref_grad(named, data.X_train, data.y_train, False, 1.0, layout.n_layers)
        # the reference gradient itself, against central differences on a few weights
        h = 1e-6
        for name, idx in (("W0", (1, 2)), ("W1", (3, 4)), ("W2", (5, 1))):
            up, down = {k: v.copy() for k, v in named.items()}, {k: v.copy() for k, v in named.items()}
            up[name][idx] += h
            down[name][idx] -= h
            numeric = (ref_loss(up, data.X_train, data.y_train, False, 1.0, 3)[0]
                       - ref_loss(down, data.X_train, data.y_train, False, 1.0, 3)[0]) / (2 * h)
            assert grads[name][idx] == pytest.approx(numeric, abs=1e-7)
        scores = np.concatenate([np.abs(named[f"W{k}"] * grads[f"W{k}"]).ravel() for k in range(3)])
        n_weights = scores.size
        kappa = int(np.floor(n_weights * 0.2 + 0.5))
        kept = np.concatenate([mask[f"W{k}"][...].ravel() for k in range(3)]).astype(bool)
        assert kept.sum() == kappa
        np.testing.assert_array_equal(np.sort(np.flatnonzero(kept)), np.sort(np.argsort(-scores)[:kappa]))
        for k in range(3):  # weights only by default: biases are all kept
            assert mask[f"b{k}"][...].all()


def weights_of(layout):
    out = np.zeros(layout.size, bool)
    for k in range(layout.n_layers):
        layout.weight(out, k)[...] = True
    return out


def on_kept_paths(layout, keep):
    """Kept weights that lie on a path of kept weights from an input to an output. Pruning can
    strand a unit (no kept weight in, or none out); the weights beside it get no gradient."""
    kept = [layout.weight(keep, k).copy() for k in range(layout.n_layers)]
    changed = True
    while changed:
        changed = False
        for k in range(layout.n_layers - 1):  # hidden units of layer k+1
            alive = kept[k].any(axis=0) & kept[k + 1].any(axis=1)
            if not alive.all() and (kept[k][:, ~alive].any() or kept[k + 1][~alive].any()):
                kept[k][:, ~alive] = False
                kept[k + 1][~alive] = False
                changed = True
    out = np.zeros(layout.size, bool)
    for k in range(layout.n_layers):
        layout.weight(out, k)[...] = kept[k]
    return out


def _pairs(args):
    out, i = {}, 0
    while i < len(args):
        out[args[i][2:].replace("-", "_")] = args[i + 1]
        i += 2
    return out


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, rounds", [("single", 8), ("dp", 30), ("local-sgd", 8), ("ist", 30)])
def test_sparse_training_keeps_pruned_weights_zero_and_counts_only_kept_bytes(tmp_path, algorithm, rounds):
    args = [*SMALL, "--algorithm", algorithm, "--sparsity", "0.7", "--rounds", str(rounds), "--local-steps", "3",
            "--eval-every", "1", "--momentum", "0.9", "--optimizer", "nesterov", "--norm", "none"]
    # no batch norm here: it makes a unit's output invariant to the scale of its incoming weights,
    # so a unit left with one kept input weight has an exactly zero gradient for it
    with run(tmp_path, algorithm, *args) as f:
        config = resolve_config({"model": "mlp", **_pairs(args)})
        data = dataset_from_config(config)
        widths = [data.n_features, 12, 10, data.n_classes]
        layout = net_layout(widths, False)
        keep = flat(layout, f["mask"]).astype(bool)
        final = flat(layout, f["final"])
        start = initial_params(layout, 0, np.dtype("float32")).astype(np.float64)
        weights = on_kept_paths(layout, keep)
        assert weights.sum() > 0.8 * (keep & weights_of(layout)).sum()
        assert (final[~keep] == 0).all()
        assert (final[keep & weights] != start[keep & weights]).all()
        kept = int(keep.sum())
        bytes_up = np.diff(f["metrics/bytes_up"][...])
        bytes_down = np.diff(f["metrics/bytes_down"][...])
        value = 4  # float32
        if algorithm == "single":
            assert (bytes_up == 0).all() and (bytes_down == 0).all()
        elif algorithm in ("dp", "local-sgd"):  # parameter server: every worker sends and gets the kept values
            assert (bytes_up == 2 * kept * value).all() and (bytes_down == 2 * kept * value).all()
        else:
            for r in range(1, rounds + 1):
                plans = draw_partition(widths[1:-1], 2, 0, r)
                up = down = 0
                for worker in range(2):
                    neurons, starts = neuron_index(widths, plans, worker)
                    sets = [neurons[starts[i] : starts[i + 1]] for i in range(len(widths))]
                    named = layout.named(keep.astype(np.int64))
                    values = 0
                    for k in range(layout.n_layers):
                        values += named[f"W{k}"][np.ix_(sets[k], sets[k + 1])].sum() + named[f"b{k}"][sets[k + 1]].sum()
                    hidden = sum(len(s) for s in sets[1:-1])
                    up += values * value
                    down += values * value + 4 * hidden
                assert bytes_up[r - 1] == up and bytes_down[r - 1] == down, r


def test_sparsity_zero_is_no_pruning(tmp_path):
    base = [*SMALL, "--rounds", "2", "--local-steps", "2"]
    with run(tmp_path, "dense", *base) as dense, run(tmp_path, "zero", *base, "--sparsity", "0", "--prune", "random") as zero:
        assert "mask" not in zero and dense.attrs["run_id"] == zero.attrs["run_id"]
        for key in dense["final"]:
            np.testing.assert_array_equal(dense["final"][key][...], zero["final"][key][...])


# ----------------------------------------------------------------------------- goal
def test_goal_stops_at_the_first_evaluation_at_or_below_the_goal(tmp_path):
    args = ["--algorithm", "single", "--hidden", "32", "--validation-fraction", "0.2", "--goal-error", "0.3",
            "--rounds", "200", "--local-steps", "5", "--eval-every", "1000", "--eval-every-steps", "15"]
    with run(tmp_path, "goal", *args) as f:
        m = f["metrics"]
        steps, errors = m["step"][...], m["val_error"][...]
        np.testing.assert_allclose(errors, 1 - m["val_accuracy"][...])
        first = int(np.argmax(errors <= 0.3))
        assert errors[first] <= 0.3 and (errors[:first] > 0.3).all()
        assert first == len(steps) - 1  # the run stopped there
        assert f.attrs["goal_reached"] and f.attrs["steps_to_result"] == steps[first] > 0
        assert f.attrs["status"] == "completed"
        # evaluations fall on the rounds where the step count passes a multiple of 15 (5 steps a round)
        np.testing.assert_array_equal(steps[1:], 15 * np.arange(1, len(steps)))


def test_a_step_budget_changes_no_evaluation_and_stops_only_runs_that_miss_the_goal(tmp_path):
    """The study's trial pruning: below steps-to-result the run stops (budget_stopped) with
    exactly the rows the unbudgeted run had; at steps-to-result it still reaches the goal."""
    args = ["--algorithm", "single", "--hidden", "32", "--validation-fraction", "0.2", "--goal-error", "0.3",
            "--rounds", "200", "--local-steps", "1", "--eval-every", "1000", "--eval-every-steps", "3"]
    with run(tmp_path, "free", *args) as f:
        k = int(f.attrs["steps_to_result"])
        free = {name: f["metrics"][name][...] for name in ("step", "val_error", "loss")}
        assert f.attrs["goal_reached"] and "step_budget" not in f.attrs
    assert k > 3, "the goal must need more than one evaluation for this test to mean anything"
    with run(tmp_path, "exact", *args, "--step-budget", str(k)) as f:
        assert f.attrs["goal_reached"] and f.attrs["steps_to_result"] == k
        assert f.attrs["step_budget"] == k and not f.attrs["budget_stopped"]
    with run(tmp_path, "short", *args, "--step-budget", str(k - 3)) as f:
        assert not f.attrs["goal_reached"] and f.attrs["budget_stopped"] and f.attrs["status"] == "completed"
        rows = len(f["metrics/step"])
        assert f["metrics/step"][-1] == k - 3
        for name, values in free.items():
            np.testing.assert_array_equal(f["metrics"][name][...], values[:rows])


def test_a_step_budget_needs_a_goal(tmp_path):
    result = ist("run", "--model", "mlp", "--algorithm", "single", "--hidden", "16", "--rounds", "2",
                 "--step-budget", "10", "--out", str(tmp_path / "out"), "--quiet")
    line = one_error_line(result)
    assert "--step-budget" in line and "--goal-error" in line
    assert files_in(tmp_path / "out") == []


def test_max_steps_exhausted_without_reaching_the_goal(tmp_path):
    args = ["--algorithm", "single", "--hidden", "16", "--goal-metric", "train_error", "--goal-error", "0.0001",
            "--max-steps", "23", "--local-steps", "5", "--rounds", "999", "--eval-every", "2"]
    with run(tmp_path, "budget", *args) as f:
        assert f.attrs["status"] == "completed" and not f.attrs["goal_reached"] and f.attrs["steps_to_result"] == -1
        assert f["metrics/step"][-1] == 25 and f.attrs["rounds_completed"] == 5  # ceil(23 / 5) rounds


def test_divergence_is_recorded_with_no_goal(tmp_path):
    result = ist("run", "--model", "mlp", "--algorithm", "single", "--hidden", "16", "--norm", "none", "--lr", "1e6",
                 "--goal-metric", "test_error", "--goal-error", "0.01", "--rounds", "50", "--local-steps", "5",
                 "--eval-every", "1", "--out", str(tmp_path), "--name", "boom", "--quiet", timeout=300)
    assert result.returncode == 3, result.stderr
    with h5py.File(tmp_path / "boom.h5", "r") as f:
        assert f.attrs["status"] == "diverged" and not f.attrs["goal_reached"] and f.attrs["steps_to_result"] == -1


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, needles", [
    (["--sparsity", "1"], ["--sparsity", "'1'", "[0, 1)"]),
    (["--sparsity", "-0.1"], ["--sparsity", "'-0.1'", "[0, 1)"]),
    (["--sparsity", "0.999", "--hidden", "4"], ["--sparsity", "0.999", "keeps no weight"]),
    (["--goal-error", "0", "--goal-metric", "test_error"], ["--goal-error", "'0'", "(0, 1]"]),
    (["--goal-error", "1.5", "--goal-metric", "test_error"], ["--goal-error", "'1.5'", "(0, 1]"]),
    (["--goal-error", "0.1"], ["--goal-metric", "val_error", "--validation-fraction"]),
    (["--validation-fraction", "0.001"], ["--validation-fraction", "0.001", "empty validation part"]),
    (["--validation-fraction", "0.999"], ["--validation-fraction", "0.999", "empty training part"]),
    (["--validation-fraction", "1"], ["--validation-fraction", "'1'", "[0, 1)"]),
    (["--lr-schedule", "linear-decay", "--decay-steps", "0"], ["--decay-steps", "'0'", ">= 1"]),
    (["--optimizer", "adam"], ["--optimizer", "'adam'", "sgd, momentum, nesterov"]),
    (["--optimizer", "sgd", "--momentum", "0.9"], ["--momentum", "0.9", "--optimizer momentum|nesterov"]),
    (["--snip-batches", "some", "--sparsity", "0.5"], ["--snip-batches", "'some'", "or all"]),
])
def test_bad_study_options(tmp_path, args, needles):
    line = one_error_line(ist("run", "--model", "mlp", "--workers", "2", *args, "--out", str(tmp_path / "out")))
    for needle in needles:
        assert needle in line, (needle, line)
    assert files_in(tmp_path / "out") == []
