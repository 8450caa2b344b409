"""The option table: precedence, canonical form, and the run id."""

from __future__ import annotations

import json

import pytest

from ist_cli.config import (
    check_keys,
    config_hash,
    parse_bandwidth,
    parse_latency,
    parse_set_overrides,
    resolve_config,
)
from ist_cli.errors import UserError
from ist_cli.io.runfile import read_run
from tests.helpers import ist


def test_later_layers_win_and_only_model_keys_are_kept():
    config = resolve_config({"model": "quadratic", "lr": 0.5}, {"lr": "0.25"}, {"local-steps": 2})
    assert config["lr"] == 0.25 and config["local_steps"] == 2
    assert "hidden" not in config and "dim" in config
    mlp = resolve_config({"model": "mlp"})
    assert "dim" not in mlp and mlp["hidden"] == [512, 512]


def test_model_specific_defaults():
    assert resolve_config({"model": "quadratic"})["local_steps"] == 1
    assert resolve_config({"model": "mlp"})["local_steps"] > 1
    assert resolve_config({"model": "mlp"})["local_steps"] == 20  # the documented default of the MLP
    assert resolve_config({"model": "mlp", "algorithm": "local-sgd"})["local_steps"] == 20


def test_same_run_spelled_differently_has_the_same_id():
    a = resolve_config({"model": "quadratic", "lr": "0.1", "workers": "4", "dim": 16})
    b = resolve_config({"model": "quadratic", "lr": 0.1, "workers": 4, "dim": "16"})
    assert a == b and config_hash(a) == config_hash(b)
    c = resolve_config({"model": "quadratic", "lr": 0.2, "workers": 4, "dim": 16})
    assert config_hash(c) != config_hash(a)


def test_set_overrides_and_unknown_keys():
    assert parse_set_overrides(["local-steps=3", "lr=0.1"]) == {"local_steps": "3", "lr": "0.1"}
    with pytest.raises(UserError, match="unknown key 'foo'"):
        check_keys({"foo": 1}, "grid")


@pytest.mark.parametrize("text,value", [("10Gbit", 1.25e9), ("100Mbit", 12.5e6), ("1GB", 1e9), ("8bit/s", 1.0)])
def test_bandwidth_units(text, value):
    assert parse_bandwidth(text) == pytest.approx(value)


@pytest.mark.parametrize("text,value", [("50us", 50e-6), ("1ms", 1e-3), ("0", 0.0), ("2s", 2.0)])
def test_latency_units(text, value):
    assert parse_latency(text) == pytest.approx(value)


def test_precedence_defaults_toml_set_flags_in_the_written_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('model = "quadratic"\nworkers = 2\ndim = 8\nrounds = 4\nlr = 0.3\nseed = 5\n')
    ist("run", "--config", str(config), "--set", "lr=0.2", "--set", "rounds=3", "--rounds", "2",
        "--out", str(tmp_path), "--name", "r", "--quiet", check=True)
    stored = read_run(tmp_path / "r.h5").config
    assert stored["lr"] == 0.2 and stored["rounds"] == 2 and stored["seed"] == 5 and stored["workers"] == 2
    assert json.loads(json.dumps(stored)) == resolve_config(stored)
