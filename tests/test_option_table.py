"""Settings a method ignores never split a run id: the pairs come from the option table."""

from __future__ import annotations

import pytest

from ist_cli.config import ALGORITHMS, MODELS, OPTIONS, config_hash, resolve_config

# Two valid values of every option (a new option must add a line here, see the last test).
VALUES = {
    "model": None, "algorithm": None,  # they choose the method: never "ignored"
    "workers": (2, 4), "rounds": (3, 4), "lr": (0.01, 0.02), "local_steps": (5, 2), "seed": (0, 1),
    "eval_every": (1, 2), "bandwidth": ("10Gbit", "1Gbit"), "latency": ("50us", "1ms"), "topology": ("ps", "ring"),
    "dim": (8, 16), "sketch": ("perm", "rand"), "sketch_q": (2, 3), "server_update": ("average", "delta"), "heterogeneity": ("homogeneous", "heterogeneous"),
    "interpolation": (False, True), "client_samples": (9, 17), "l2": (0.1, 0.2), "problem_file": (None, "p.npz"),
    "save_params_every": (0, 2), "hidden": ([8], [8, 8]), "dataset": ("digits", "synthetic"), "batch_size": (4, 8),
    "momentum": (0.0, 0.5), "norm": ("none", "batch"), "partition": ("iid", "shards:2"),
    "dtype": ("float32", "float64"), "subnet_scale": ("none", "width"), "synthetic_samples": (100, 200),
    "synthetic_features": (4, 5), "synthetic_classes": (2, 3),
    "optimizer": ("momentum", "nesterov"), "lr_schedule": ("constant", "linear-decay"), "decay_steps": (10, 20),
    "end_lr_factor": (0.01, 0.1), "eval_every_steps": (0, 5), "validation_fraction": (0.0, 0.1),
    "goal_error": None,  # needs a goal metric it can be measured on: covered in test_study_cli.py
    "goal_metric": ("test_error", "train_error"), "max_steps": (0, 10), "sparsity": (0.0, 0.5),
    "prune": ("snip", "random"), "snip_batches": (1, 2), "prune_biases": (False, True),
    "noise_scale_every": (0, 1), "lipschitz_every": (0, 1), "arch": ("simple-cnn", "resnet8"),
    "server": None,  # refused (not ignored) by the methods that need the whole model: test_partitioned.py
    "min_blocks": (0, 1),
    "partition_rule": ("random", "stratified"),
    "full_eval_every": (1, 2),
    "widths": ([8, 16, 32], [16, 32, 64]), "blocks": ([1, 3, 1], [2, 6, 1]), "eval_samples": (100, 200),
}
BASE = {"workers": 2, "dim": 8, "hidden": [8]}
# a method's own needs: resist runs on a spec with partitioned residual blocks only
METHOD_BASE = {"resist": {"arch": "preact-resnet"}}


def ignored_pairs():
    """(model, algorithm, key, the other settings): every method x option the table says is unused."""
    for model in MODELS:
        for algorithm in ALGORITHMS[model]:
            base = {**BASE, **METHOD_BASE.get(algorithm, {}), "model": model, "algorithm": algorithm}
            config = {**resolve_config(base), "model": model, "algorithm": algorithm}
            for option in OPTIONS:
                if VALUES.get(option.key) is None:
                    continue
                if not option.used_by(config):
                    yield model, algorithm, option.key, base
                elif algorithm in option.pinned:
                    yield model, algorithm, option.key, base
                for key, allowed in option.requires.items():  # a dependency holding a value that disables it
                    if key in METHOD_BASE.get(algorithm, {}):
                        continue  # the method runs with this value only (resist: preact-resnet)
                    other = next(v for v in VALUES[key] if v not in allowed)
                    if option.used_by({**config, key: other}):
                        continue
                    yield model, algorithm, option.key, {**base, key: other}


PAIRS = list(ignored_pairs())


@pytest.mark.parametrize("model, algorithm, key, base", PAIRS,
                         ids=[f"{m}-{a}-{k}-{i}" for i, (m, a, k, _) in enumerate(PAIRS)])
def test_a_setting_the_method_ignores_does_not_change_the_run_id(model, algorithm, key, base):
    first, second = VALUES[key]
    if (algorithm, key) in (("gd", "local_steps"), ("dcgd", "local_steps")):
        first = second = 1  # refused when set to anything else; dropped from the config all the same
    a = resolve_config({**base, key: first})
    b = resolve_config({**base, key: second})
    assert a == b and config_hash(a) == config_hash(b)


def test_the_pairs_the_issue_names_are_among_them():
    names = {(m, a, k) for m, a, k, _ in PAIRS}
    assert ("mlp", "dp", "local_steps") in names
    assert {("quadratic", "gd", "sketch"), ("quadratic", "gd", "sketch_q")} <= names
    assert ("quadratic", "ist", "sketch_q") in names and ("quadratic", "dcgd", "sketch_q") in names  # under perm
    assert ("quadratic", "ist", "hidden") in names and ("mlp", "ist", "dim") in names
    assert ("mlp", "single", "workers") in names and ("mlp", "single", "partition") in names


def test_a_setting_the_method_uses_changes_the_run_id():
    for model in MODELS:
        for algorithm in ALGORITHMS[model]:
            base = {**BASE, **METHOD_BASE.get(algorithm, {}), "model": model, "algorithm": algorithm}
            config = resolve_config(base)
            for option in OPTIONS:
                if VALUES.get(option.key) is None or option.key not in config or algorithm in option.pinned:
                    continue
                if option.key in METHOD_BASE.get(algorithm, {}):
                    continue  # the method runs with this value only
                if option.key == "problem_file":
                    continue  # needs a real file; the table's GENERATED rule is covered above
                values = [resolve_config({**base, option.key: v}) for v in VALUES[option.key]]
                assert config_hash(values[0]) != config_hash(values[1]), (model, algorithm, option.key)


def test_every_option_has_two_values_here():
    """A new option must be listed in VALUES, so the tests above cover its algorithms."""
    assert set(VALUES) == {option.key for option in OPTIONS}
