"""Every kind of run is bitwise what it was: sha256 digests of ``/final``, the non-timing
``/metrics`` columns and the other stored arrays (``/params``, ``/problem``, masks) of runs
written by the CLI, compared with digests recorded from an earlier version of the code.

A refactoring that moves code between modules must not change a single bit of any run; a
change that means to change numbers must update the digests here and say why in its commit.
Digests are of the raw bytes with dtype and shape, read with h5py (not the project's reader).
Only the datasets recorded here are compared: a new column or group does not fail the test.
"""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

from tests.helpers import ist_json

# measured times: never the same twice (every other metric is a deterministic count or value)
TIMING = {"wall_time", "compute_time", "sim_time", "comm_time_measured"}

QUAD = ("--model", "quadratic", "--workers", "4", "--rounds", "40", "--dim", "16")
SMALL_MLP = ("--model", "mlp", "--hidden", "32,32", "--rounds", "6", "--eval-every", "2")

RUNS: dict[str, tuple[str, ...]] = {
    "mlp-ist-default": ("--workers", "8", "--model", "mlp"),
    "mlp-dp": (*SMALL_MLP, "--algorithm", "dp", "--workers", "4", "--batch-size", "16"),
    "mlp-local-sgd": (*SMALL_MLP, "--algorithm", "local-sgd", "--workers", "3", "--local-steps", "4",
                      "--momentum", "0.9", "--lr-schedule", "linear-decay", "--noise-scale-every", "1",
                      "--lipschitz-every", "1"),
    "mlp-single": (*SMALL_MLP, "--algorithm", "single", "--local-steps", "5", "--norm", "none",
                   "--optimizer", "nesterov", "--momentum", "0.5"),
    "mlp-ist-small": (*SMALL_MLP, "--algorithm", "ist", "--workers", "4", "--local-steps", "3",
                      "--partition", "dirichlet:0.5", "--dtype", "float64"),
    "study-trial-sparse": ("--model", "mlp", "--algorithm", "single", "--hidden", "64", "--sparsity", "0.9",
                           "--goal-error", "0.1", "--validation-fraction", "0.1", "--max-steps", "400",
                           "--eval-every-steps", "40", "--batch-size", "16", "--local-steps", "4",
                           "--lr", "0.05", "--momentum", "0.9", "--seed", "3"),
    "study-trial-budget": ("--model", "mlp", "--algorithm", "single", "--hidden", "64", "--sparsity", "0.9",
                           "--prune", "magnitude", "--goal-error", "0.01", "--validation-fraction", "0.1",
                           "--max-steps", "400", "--eval-every-steps", "40", "--batch-size", "16",
                           "--local-steps", "4", "--lr", "0.05", "--step-budget", "120"),
    "quad-ist": (*QUAD, "--algorithm", "ist", "--save-params-every", "10"),
    "quad-ist-delta": (*QUAD, "--algorithm", "ist", "--server-update", "delta", "--sketch", "perm-precond",
                       "--local-steps", "3", "--lr", "0.01"),
    "quad-gd": (*QUAD, "--algorithm", "gd"),
    "quad-dcgd": (*QUAD, "--algorithm", "dcgd", "--sketch", "rand", "--sketch-q", "8", "--lr", "0.005"),
}

SLOW = {"mlp-ist-default"}
OUTCOME = ("run_id", "status", "rounds_completed", "goal_reached", "steps_to_result", "budget_stopped")


def digests(path) -> dict[str, str]:
    """sha256 of every stored array (dtype, shape and bytes), timing metrics aside."""
    found: dict[str, str] = {}

    def visit(name: str, obj) -> None:
        if not isinstance(obj, h5py.Dataset) or "/" not in name:  # root datasets: the config and environment
            return
        if name.startswith("metrics/") and name.split("/")[1] in TIMING:
            return
        value = np.ascontiguousarray(obj[()])
        if name.endswith("/round") and value.dtype.kind == "i":  # rounds are int64 now; recorded as float64
            value = value.astype(np.float64)
        h = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
        h.update(value.tobytes())
        found[name] = h.hexdigest()[:16]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        for key in OUTCOME:
            if key in f.attrs:
                found[f"@{key}"] = str(f.attrs[key].item() if hasattr(f.attrs[key], "item") else f.attrs[key])
    return found


EXPECTED: dict[str, dict[str, str]] = {
    "mlp-ist-default": {
        "@rounds_completed": "200",
        "@run_id": "80000bf87342",
        "@status": "completed",
        "final/W0": "e95612b4b8301f6d",
        "final/W1": "09895063da49c49a",
        "final/W2": "2c4543aa94b3c5cb",
        "final/b0": "fbb3e14ebb3dbed9",
        "final/b1": "11a567a5a1256623",
        "final/b2": "fb6841e1a4fa6e9a",
        "final/beta0": "59289d7fb0fd99d5",
        "final/beta1": "22a3e21270204c79",
        "final/gamma0": "1f3c3f253f3af104",
        "final/gamma1": "cd2653d041cc7c7b",
        "metrics/bytes_down": "a2afeb69787bd7e1",
        "metrics/bytes_up": "743933dc58807e0c",
        "metrics/comm_time_model": "2e7c16a91ec24ed0",
        "metrics/loss": "a722c4019a291185",
        "metrics/round": "fdacb8c3fed01cec",
        "metrics/step": "35eedb13f49c7d30",
        "metrics/test_accuracy": "ed1dfb91a880ad5a",
        "metrics/test_loss": "2c5482b1d623db2a",
        "metrics/train_accuracy": "fde1f99c15afffe2",
        "metrics/worker_train_loss": "73fc87adbf2273e6",
    },
    "mlp-dp": {
        "@rounds_completed": "6",
        "@run_id": "3f958037c817",  # was ac1486d5bd7a: DP's config now records local_steps = 1
        "@status": "completed",
        "final/W0": "4a614fe533b97c15",
        "final/W1": "f82b640b8dad426a",
        "final/W2": "8f1ce1e9f0618e4f",
        "final/b0": "20102799c5cddb36",
        "final/b1": "9f4500f9d92c1ec0",
        "final/b2": "4183083edb101cb9",
        "final/beta0": "436975db0c7fad6a",
        "final/beta1": "65b08f65f1d76c62",
        "final/gamma0": "3b65e68df609c905",
        "final/gamma1": "fed77833105bd0b5",
        "metrics/bytes_down": "df056fd44b23dc9e",
        "metrics/bytes_up": "df056fd44b23dc9e",
        "metrics/comm_time_model": "827aad296cfdd430",
        "metrics/loss": "ec1c9d36ee38be46",
        "metrics/round": "b8666d0069a7ca1a",
        "metrics/step": "b8666d0069a7ca1a",
        "metrics/test_accuracy": "e25befd47d4556ec",
        "metrics/test_loss": "70e59c74996ff9ff",
        "metrics/train_accuracy": "8f13288644476426",
        "metrics/worker_train_loss": "f71a76c4f66d97f1",
    },
    "mlp-local-sgd": {
        "@rounds_completed": "6",
        "@run_id": "3aa923144d5a",
        "@status": "completed",
        "final/W0": "87110cce77a29c41",
        "final/W1": "90322d37356d04a2",
        "final/W2": "c4d3954a9f8b4e82",
        "final/b0": "b12743823ff99eb4",
        "final/b1": "9f4500f9d92c1ec0",
        "final/b2": "a5138ad63c850925",
        "final/beta0": "9a026e0014340276",
        "final/beta1": "183bfc73eb82b8c5",
        "final/gamma0": "4ff83f7555597b26",
        "final/gamma1": "a7581fe05f11ad54",
        "metrics/bytes_down": "490ced45175ec5fc",
        "metrics/bytes_up": "490ced45175ec5fc",
        "metrics/comm_time_model": "cab1ec352b8045bc",
        "metrics/grad_norm_sq_est": "9fc1e896425e4747",
        "metrics/lipschitz": "5cf3d953a252f7f6",
        "metrics/loss": "7b14f69300c445a1",
        "metrics/noise_scale": "60ad17b7dac04e81",
        "metrics/round": "b8666d0069a7ca1a",
        "metrics/step": "19973e7182fd3dae",
        "metrics/test_accuracy": "3317d46178363561",
        "metrics/test_loss": "4bb4264eddae9e04",
        "metrics/trace_cov_est": "c657156cbbf6f2b5",
        "metrics/train_accuracy": "d4055c5b6f4f4e8e",
        "metrics/worker_train_loss": "67d53675a63afb76",
    },
    "mlp-single": {
        "@rounds_completed": "6",
        "@run_id": "80761381db22",
        "@status": "completed",
        "final/W0": "7cd72bb051c54a59",
        "final/W1": "380743bd90068779",
        "final/W2": "c08f3e1316b22c48",
        "final/b0": "02e30239ff7b58cb",
        "final/b1": "f240aa01b7d02b0b",
        "final/b2": "1fd9f01a9dc1c34f",
        "metrics/bytes_down": "15cd8b7cd8b89d38",
        "metrics/bytes_up": "15cd8b7cd8b89d38",
        "metrics/comm_time_model": "15cd8b7cd8b89d38",
        "metrics/loss": "50017bc388d608c2",
        "metrics/round": "b8666d0069a7ca1a",
        "metrics/step": "8bfca0a4bcffab06",
        "metrics/test_accuracy": "8c6229408df38763",
        "metrics/test_loss": "1dff0ca3d3069137",
        "metrics/train_accuracy": "8a880f7c6fd3582c",
        "metrics/worker_train_loss": "640a615fcfa52954",
    },
    "mlp-ist-small": {
        "@rounds_completed": "6",
        "@run_id": "e419fdea694c",
        "@status": "completed",
        "final/W0": "12f4b25dd3e1afd7",
        "final/W1": "ab1e07f387398eae",
        "final/W2": "8ab40302e71fcc7b",
        "final/b0": "19fc9f5ff658ceda",
        "final/b1": "a3a736102c2b4daa",
        "final/b2": "fd07e4f78488ab01",
        "final/beta0": "dc59e3132be9955b",
        "final/beta1": "86ca6b7ea25cb6de",
        "final/gamma0": "56cb004885b11033",
        "final/gamma1": "de230d47ac8d8591",
        "metrics/bytes_down": "6076cb47e678fa50",
        "metrics/bytes_up": "410a3cd2c994f36c",
        "metrics/comm_time_model": "a9b817a96629b9b3",
        "metrics/loss": "6b7165bacfcd5767",
        "metrics/round": "b8666d0069a7ca1a",
        "metrics/step": "02d3f86033dee1e1",
        "metrics/test_accuracy": "cf790169127b9241",
        "metrics/test_loss": "a7b048da35c559a7",
        "metrics/train_accuracy": "35044e8b674d0529",
        "metrics/worker_train_loss": "3c3dccd6c6ebc604",
    },
    "study-trial-sparse": {
        "@goal_reached": "True",
        "@rounds_completed": "40",
        "@run_id": "a81d9ac9fd80",
        "@status": "completed",
        "@steps_to_result": "160",
        "final/W0": "b5356ef93d294043",
        "final/W1": "00b9852cb5c51af2",
        "final/b0": "61e06b1398ad7e29",
        "final/b1": "1d3bbbeca7ab379c",
        "final/beta0": "ea450d8ecd8fb1e8",
        "final/gamma0": "b8f762a81d9b3b45",
        "mask/W0": "4fca7644e944a714",
        "mask/W1": "b0918fee98e6f662",
        "mask/b0": "41f5cafb7409a407",
        "mask/b1": "1cfa9222bdf933bf",
        "mask/beta0": "41f5cafb7409a407",
        "mask/gamma0": "41f5cafb7409a407",
        "metrics/bytes_down": "2c2b58e8c1890478",
        "metrics/bytes_up": "2c2b58e8c1890478",
        "metrics/comm_time_model": "2c2b58e8c1890478",
        "metrics/loss": "fe3444adaaac9e65",
        "metrics/round": "5d1e2a94450cb344",
        "metrics/step": "3c0ddcf372a45bc0",
        "metrics/test_accuracy": "e94c08415f8b8fa0",
        "metrics/test_loss": "a2f2ca7663d5979e",
        "metrics/train_accuracy": "fd385f3e842bac38",
        "metrics/val_accuracy": "04d76d3eb1ffbede",
        "metrics/val_error": "20ab465ae831d155",
        "metrics/val_loss": "f783cccf71479819",
        "metrics/worker_train_loss": "ea446cfb92fe8a53",
    },
    "study-trial-budget": {
        "@budget_stopped": "True",
        "@goal_reached": "False",
        "@rounds_completed": "30",
        "@run_id": "7a877263eb41",
        "@status": "completed",
        "@steps_to_result": "-1",
        "final/W0": "e3e234757d484680",
        "final/W1": "7768daeb2fda8c46",
        "final/b0": "804e76e55d2cc3f1",
        "final/b1": "9558f6d1ab400935",
        "final/beta0": "f4faa50619361aaf",
        "final/gamma0": "f2fd92a15a4e458e",
        "mask/W0": "3c85bb83a3db6359",
        "mask/W1": "a74bf16d03466d4c",
        "mask/b0": "41f5cafb7409a407",
        "mask/b1": "1cfa9222bdf933bf",
        "mask/beta0": "41f5cafb7409a407",
        "mask/gamma0": "41f5cafb7409a407",
        "metrics/bytes_down": "15cd8b7cd8b89d38",
        "metrics/bytes_up": "15cd8b7cd8b89d38",
        "metrics/comm_time_model": "15cd8b7cd8b89d38",
        "metrics/loss": "be3d98ec79734b12",
        "metrics/round": "8bfca0a4bcffab06",
        "metrics/step": "6ef4c1fd116b45ba",
        "metrics/test_accuracy": "3b6af2cd4cc6b373",
        "metrics/test_loss": "ea0204449d64db2a",
        "metrics/train_accuracy": "c85d125fd5627a0a",
        "metrics/val_accuracy": "9ee25b859f6d8b38",
        "metrics/val_error": "351c0d75d7e02104",
        "metrics/val_loss": "fa30d8d03490b317",
        "metrics/worker_train_loss": "5fc1561e90065558",
    },
    "quad-ist": {
        "@rounds_completed": "40",
        "@run_id": "f8716bd80b30",
        "@status": "completed",
        "final/x": "105c232c6c8f4254",
        "metrics/bytes_down": "ac38eab1f6d22ebf",
        "metrics/bytes_up": "0046ca5c67b8003a",
        "metrics/comm_time_model": "04244d17fa98b33b",
        "metrics/dist_to_opt_sq": "c2f22b612134f78a",
        "metrics/f_gap": "8871911abe8baefa",
        "metrics/grad_norm_sq": "4833eeb5fc7a1896",
        "metrics/loss": "54e103887490138e",
        "metrics/round": "30bbf82079677c61",
        "params/round": "5d1e2a94450cb344",
        "params/x": "f16d8c5cf61ef9fc",
        "problem/L": "f608ff03d36a81fc",
        "problem/b": "55503ec5bb0d970b",
        "problem/x_star": "d3c9a6eb9cf187d3",
    },
    "quad-ist-delta": {
        "@rounds_completed": "40",
        "@run_id": "63a423b9404e",
        "@status": "completed",
        "final/x": "78498826a741f81b",
        "metrics/bytes_down": "ac38eab1f6d22ebf",
        "metrics/bytes_up": "0046ca5c67b8003a",
        "metrics/comm_time_model": "04244d17fa98b33b",
        "metrics/dist_to_opt_sq": "b76be84b02282965",
        "metrics/f_gap": "433d809af25a4fed",
        "metrics/grad_norm_sq": "6afd38a538339a23",
        "metrics/loss": "2a625c79ef524207",
        "metrics/round": "30bbf82079677c61",
        "problem/L": "f608ff03d36a81fc",
        "problem/b": "55503ec5bb0d970b",
        "problem/x_star": "d3c9a6eb9cf187d3",
    },
    "quad-gd": {
        "@rounds_completed": "40",
        "@run_id": "7fad54e1e6cb",
        "@status": "completed",
        "final/x": "7ed1e99982d31f30",
        "metrics/bytes_down": "977167c4a21c1a13",
        "metrics/bytes_up": "977167c4a21c1a13",
        "metrics/comm_time_model": "a139570d8c9798b3",
        "metrics/dist_to_opt_sq": "2ccba5d6efe34c7d",
        "metrics/f_gap": "987c83fb85792a00",
        "metrics/grad_norm_sq": "4f9e0096286eea65",
        "metrics/loss": "01dcc15af5ca6792",
        "metrics/round": "30bbf82079677c61",
        "problem/L": "f608ff03d36a81fc",
        "problem/b": "55503ec5bb0d970b",
        "problem/x_star": "d3c9a6eb9cf187d3",
    },
    "quad-dcgd": {
        "@rounds_completed": "40",
        "@run_id": "b17ab4bec130",
        "@status": "completed",
        "final/x": "ca40dc970d22d8be",
        "metrics/bytes_down": "977167c4a21c1a13",
        "metrics/bytes_up": "077941b5ed73d7bc",
        "metrics/comm_time_model": "845875524dbe36f4",
        "metrics/dist_to_opt_sq": "b93abe6ba26191b2",
        "metrics/f_gap": "c7e499a58c30ac87",
        "metrics/grad_norm_sq": "a025183f26038abe",
        "metrics/loss": "11f9a5106b3ccf55",
        "metrics/round": "30bbf82079677c61",
        "problem/L": "f608ff03d36a81fc",
        "problem/b": "55503ec5bb0d970b",
        "problem/x_star": "d3c9a6eb9cf187d3",
    },
}


@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW else k for k in RUNS])
def test_run_is_bitwise_unchanged(key, tmp_path):
    summary = ist_json("run", *RUNS[key], "--out", str(tmp_path), "--name", key, timeout=600)
    found = digests(summary["file"])
    expected = EXPECTED[key]
    changed = sorted(name for name in expected if found.get(name) != expected[name])
    assert not changed, f"{key}: changed or missing: {changed}"


@pytest.mark.slow
def test_default_run_accuracy(tmp_path):
    """The default MLP run (8 workers, seed 0) reaches the recorded test accuracy."""
    summary = ist_json("run", *RUNS["mlp-ist-default"], "--out", str(tmp_path), timeout=600)
    assert round(summary["test_accuracy"], 6) == 0.983287
