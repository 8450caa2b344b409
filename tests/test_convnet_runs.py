"""``ist run --model cnn`` end to end on small generated images: parameter counts and the SNIP
mask read back from the run file, pruned weights still 0 after training by every method,
bitwise reproducible DP and local SGD at n = 4, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from ist_cli.io.runfile import read_run
from tests.convnet_images import write_image_set
from tests.helpers import TIMING, files_in, ist, one_error_line
from tests.test_image_data import write_cifar

SMALL = ["--model", "cnn", "--arch", "simple-cnn", "--batch-size", "8", "--lr", "0.05", "--eval-every", "1"]


@pytest.fixture(scope="module")
def images16(tmp_path_factory) -> str:
    return write_image_set(tmp_path_factory.mktemp("img16") / "set", train=160, test=40, side=16)


@pytest.fixture(scope="module")
def images28(tmp_path_factory) -> str:
    return write_image_set(tmp_path_factory.mktemp("img28") / "set", train=40, test=10, side=28)


def run(tmp_path: Path, name: str, *args: str) -> Path:
    ist("run", *args, "--out", str(tmp_path), "--name", name, "--quiet", check=True, timeout=400)
    return tmp_path / f"{name}.h5"


def masks(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {key: f["mask"][key][...] for key in f["mask"]}


@pytest.mark.parametrize("algorithm", ["dp", "local-sgd", "single"])
def test_simple_cnn_snip_keeps_round_a_tenth_and_pruned_weights_stay_zero(tmp_path, images28, algorithm):
    """Lee et al.'s Simple-CNN on 28x28x1: 62,346 parameters; SNIP at 90 % over all of them
    (the cnn default) keeps round(0.1 N) = 6,235, every bias pruned (its score |0 * g| is 0)."""
    workers = "1" if algorithm == "single" else "2"
    path = run(tmp_path, algorithm, *SMALL, "--dataset", images28, "--algorithm", algorithm, "--workers", workers,
               "--rounds", "3", "--local-steps", "2", "--momentum", "0.9", "--sparsity", "0.9")
    data, mask = read_run(path), masks(path)
    assert sum(array.size for array in data.final.values()) == 62_346
    assert set(mask) == set(data.final)
    assert sum(int(m.sum()) for m in mask.values()) == 6_235 == round(0.1 * 62_346)
    assert all(int(mask[key].sum()) == 0 for key in mask if key.startswith("b"))
    for key, values in data.final.items():
        assert (values[mask[key] == 0] == 0).all(), key
    kept = np.concatenate([data.final[key][mask[key] == 1] for key in mask])
    assert (kept != 0).mean() > 0.99  # the kept ones are weights drawn non-zero, then trained
    assert np.isfinite(data.metrics["test_loss"]).all()


def test_resnet8_has_75050_parameters_on_cifar_shaped_images(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-bin", np.random.default_rng(1))
    path = run(tmp_path, "resnet8", "--model", "cnn", "--arch", "resnet8", "--dataset",
               f"cifar10:{tmp_path / 'cifar-10-batches-bin'}", "--algorithm", "single", "--rounds", "1",
               "--local-steps", "2", "--batch-size", "4")
    final = read_run(path).final
    assert sum(array.size for array in final.values()) == 75_050
    assert final["W0"].shape == (3, 3, 3, 16) and final["W7"].shape == (64, 10)  # (kh, kw, in, out); dense (in, out)


@pytest.mark.parametrize("algorithm", ["dp", "local-sgd"])
def test_four_workers_are_bitwise_reproducible_and_learn(tmp_path, images16, algorithm):
    args = [*SMALL, "--dataset", images16, "--algorithm", algorithm, "--workers", "4", "--rounds", "6",
            "--local-steps", "3", "--momentum", "0.9"]
    first, second = read_run(run(tmp_path, "a", *args)), read_run(run(tmp_path, "b", *args))
    assert first.final.keys() == second.final.keys()
    for key in first.final:
        assert first.final[key].tobytes() == second.final[key].tobytes(), key
    for key in set(first.metrics) - TIMING:
        assert np.array_equal(first.metrics[key], second.metrics[key], equal_nan=True), key
    loss = first.metrics["loss"]
    assert loss[-1] < loss[0]  # the generated classes are learnable: training lowers the loss


def test_ist_on_a_convnet_narrower_than_the_workers_is_one_line_and_creates_nothing(tmp_path, images16):
    result = ist("run", "--model", "cnn", "--algorithm", "ist", "--workers", "33", "--dataset", images16,
                 "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "--workers: 33 is not allowed for ist with --arch simple-cnn; expected at most 32" in one_error_line(result)
    assert files_in(tmp_path) == []


def test_images_too_small_for_the_arch_are_one_line(tmp_path):
    result = ist("run", "--model", "cnn", "--arch", "simple-cnn", "--dataset", "digits", "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    line = one_error_line(result)
    assert "--arch: simple-cnn does not fit images of shape (1, 8, 8)" in line
    assert files_in(tmp_path) == []


def test_run_help_lists_the_architectures():
    out = ist("run", "--help", check=True).stdout
    assert "--arch [simple-cnn|resnet8|preact-resnet]" in out and "--model [quadratic|mlp|cnn]" in out


STUDY = """
name = "cnn-tiny"
[base]
model = "cnn"
arch = "simple-cnn"
algorithm = "single"
dataset = "DATASET"
rounds = 4
local_steps = 5
eval_every = 1
momentum = 0.9
validation_fraction = 0.25
goal_error = 0.5
[study]
batch_sizes = [4, 16]
trials = 1
[search]
lr = { log = [0.01, 0.05] }
"""


@pytest.mark.slow
def test_study_on_a_convnet_trains_to_the_goal_and_reports_steps(tmp_path, images16):
    """``ist study`` on a cnn base: trials run to the validation goal and the report counts their steps."""
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace("DATASET", images16))
    out = tmp_path / "out"
    result = ist("study", str(path), "--out", str(out), "--jobs", "1", "--json", "--quiet", timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(ist("report", str(out), "--format", "json", check=True).stdout)
    rows = {row["batch_size"]: row for row in report["rows"]}
    assert set(rows) == {4, 16}
    for row in rows.values():  # a reached goal is a multiple of the 5 steps between evaluations
        assert row["steps_to_result"] is None or row["steps_to_result"] % 5 == 0
    assert any(row["steps_to_result"] is not None for row in rows.values())
