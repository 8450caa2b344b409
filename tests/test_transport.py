"""The transport seam: a run through the in-process transport (private copies, only the
declared regions cross) equals the shared-memory run bit for bit, for every method; and the
regions a method declares are exactly the bytes its accounting counts."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.algorithms import build_algorithm
from ist_cli.config import resolve_config
from ist_cli.io.metric_info import TIMING_METRICS
from ist_cli.io.runfile import read_run
from ist_cli.runner import run_experiment
from ist_cli.runtime.inprocess import InProcessTransport
from tests.method_rounds import assert_regions_are_the_accounted_bytes

QUADRATIC = {"model": "quadratic", "workers": 3, "dim": 12, "rounds": 12, "local_steps": 2, "lr": 0.05}
MLP = {"model": "mlp", "workers": 3, "hidden": [20, 13], "rounds": 4, "eval_every": 2, "local_steps": 3,
       "batch_size": 8, "momentum": 0.5}
CASES = [
    {**QUADRATIC, "algorithm": "ist", "sketch": "perm"},
    {**QUADRATIC, "algorithm": "ist", "sketch": "rand", "sketch_q": 5, "interpolation": True},
    {**QUADRATIC, "algorithm": "ist", "sketch": "identity"},
    {**QUADRATIC, "algorithm": "gd", "local_steps": 1},
    {**QUADRATIC, "algorithm": "dcgd", "sketch": "rand", "local_steps": 1},
    {**QUADRATIC, "algorithm": "dcgd", "sketch": "perm", "local_steps": 1},
    {**MLP, "algorithm": "ist"},
    {**MLP, "algorithm": "ist", "norm": "none", "dtype": "float64"},
    {**MLP, "algorithm": "dp"},
    {**MLP, "algorithm": "local-sgd"},
    {**MLP, "algorithm": "single"},
]
# Pruned runs (docs/sparsity.md): the mask is resident, IST workers gather their share from it;
# their regions carry the kept entries only, as the accounting counts.
SPARSE = [{**MLP, "algorithm": algorithm, "sparsity": 0.7, "optimizer": "nesterov", "noise_scale_every": 1}
          for algorithm in ("ist", "dp", "local-sgd")]


def case_id(case: dict) -> str:
    return "-".join(str(case.get(key)) for key in ("model", "algorithm", "sketch", "norm") if key in case)


@pytest.mark.slow
@pytest.mark.parametrize("config", CASES + SPARSE, ids=[case_id(c) + ("-sparse" if "sparsity" in c else "")
                                                          for c in CASES + SPARSE])
def test_in_process_and_shared_memory_runs_are_bitwise_equal(tmp_path, config, shm_guard):
    run_experiment(config, out_dir=tmp_path, name="shm")
    run_experiment(config, out_dir=tmp_path, name="inproc", transport=InProcessTransport)
    a, b = read_run(tmp_path / "shm.h5"), read_run(tmp_path / "inproc.h5")
    assert a.status == b.status == "completed"
    assert set(a.metrics) == set(b.metrics)
    for key in set(a.metrics) - set(TIMING_METRICS):
        assert a.metrics[key].tobytes() == b.metrics[key].tobytes(), key
    assert set(a.final) == set(b.final)
    for key in a.final:
        assert a.final[key].dtype == b.final[key].dtype and a.final[key].tobytes() == b.final[key].tobytes(), key
    assert a.metrics["loss"][-1] < a.metrics["loss"][0]  # it trained: equal by doing nothing would not count


def test_in_process_runs_are_deterministic(tmp_path):
    config = {**QUADRATIC, "algorithm": "ist", "sketch": "rand"}
    for name in ("a", "b"):
        run_experiment(config, out_dir=tmp_path, name=name, transport=InProcessTransport)
    a, b = read_run(tmp_path / "a.h5"), read_run(tmp_path / "b.h5")
    for key in set(a.metrics) - set(TIMING_METRICS):
        assert np.array_equal(a.metrics[key], b.metrics[key]), key
    assert a.final["x"].tobytes() == b.final["x"].tobytes()


@pytest.mark.parametrize("config", [c for c in CASES + SPARSE if c["algorithm"] != "single"],
                         ids=lambda c: case_id(c) + ("-sparse" if "sparsity" in c else ""))
def test_declared_regions_are_the_bytes_the_accounting_counts(config):
    """On the ps topology, worker i's down regions hold bytes_down[i] bytes and its up regions bytes_up[i]."""
    assert_regions_are_the_accounted_bytes(build_algorithm(resolve_config(config)))
