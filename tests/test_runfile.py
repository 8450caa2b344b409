"""The HDF5 run file holds exactly what docs/schema.md promises, read back with plain h5py."""

from __future__ import annotations

import json

import h5py
import numpy as np

from ist_cli import __version__
from ist_cli.config import config_hash
from tests.helpers import ist_json

REQUIRED = {"round", "loss", "wall_time", "compute_time", "comm_time_model", "bytes_up", "bytes_down",
            "grad_norm_sq", "dist_to_opt_sq", "f_gap"}


def test_quadratic_run_file_schema(tmp_path):
    summary = ist_json("run", "--model", "quadratic", "--workers", "2", "--dim", "6", "--rounds", "10",
                       "--eval-every", "3", "--save-params-every", "4", "--seed", "7",
                       "--out", str(tmp_path), "--name", "q")
    assert summary["status"] == "completed" and summary["file"].endswith("q.h5")
    with h5py.File(tmp_path / "q.h5", "r") as f:
        attrs = dict(f.attrs)
        assert attrs["schema"] == 1 and attrs["status"] == "completed" and attrs["seed"] == 7
        assert attrs["ist_version"] == __version__
        assert "T" in attrs["created"]
        config = json.loads(f["config"][()])
        assert attrs["run_id"] == config_hash(config) == summary["run_id"]
        env = json.loads(f["env"][()])
        assert env["cpu_count"] >= 1 and "numba" in env["packages"]
        metrics = f["metrics"]
        assert REQUIRED <= set(metrics)
        lengths = {metrics[name].shape for name in metrics}
        assert lengths == {(5,)}  # rounds 0, 3, 6, 9 and the last one, 10
        np.testing.assert_array_equal(metrics["round"][()], [0, 3, 6, 9, 10])
        assert metrics["round"].dtype == np.int64 and f["params/round"].dtype == np.int64
        assert all(metrics[name].dtype == np.float64 for name in metrics if name != "round")
        assert np.all(np.diff(metrics["bytes_up"][()]) > 0)
        L, b, x_star = f["problem/L"][()], f["problem/b"][()], f["problem/x_star"][()]
        assert L.shape == (2, 6, 6) and b.shape == (2, 6)
        np.testing.assert_allclose(L.mean(0) @ x_star, b.mean(0))
        x = f["final/x"][()]
        assert x.shape == (6,)
        np.testing.assert_array_equal(f["params/round"][()], [0, 4, 8])
        assert f["params/x"].shape == (3, 6)
        # loss at the final model is recomputable from /problem alone
        assert np.isclose(metrics["loss"][-1], 0.5 * x @ L.mean(0) @ x - x @ b.mean(0), rtol=1e-12)
