"""docs/schema.md is the contract of the run file: every object a real run file holds is
listed there, with the units the file itself carries; xarray reads /metrics with `round` as
its coordinate."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import h5py
import pytest

from tests.helpers import ist_json

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "schema.md"
pytestmark = pytest.mark.slow  # two real runs


@pytest.fixture(scope="module")
def run_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    ist_json("run", "--model", "quadratic", "--workers", "2", "--dim", "6", "--rounds", "4",
             "--save-params-every", "2", "--out", str(out), "--name", "quadratic")
    ist_json("run", "--model", "mlp", "--workers", "2", "--rounds", "2", "--hidden", "8,8", "--local-steps", "2",
             "--eval-every", "1", "--out", str(out), "--name", "mlp")
    # the optional objects of an MLP run: /mask, validation, goal attrs, noise scale, Lipschitz
    ist_json("run", "--model", "mlp", "--workers", "2", "--rounds", "2", "--hidden", "8,8", "--eval-every", "1",
             "--sparsity", "0.5", "--validation-fraction", "0.2", "--goal-error", "0.01", "--noise-scale-every", "1",
             "--lipschitz-every", "1", "--out", str(out), "--name", "mlp-options")
    return {"quadratic": out / "quadratic.h5", "mlp": out / "mlp.h5", "mlp-options": out / "mlp-options.h5"}


def documented() -> set[str]:
    """Every `code` span of docs/schema.md."""
    return set(re.findall(r"`([^`\n]+)`", SCHEMA.read_text()))


def objects(path: Path) -> list[tuple[str, list[str]]]:
    """(HDF5 path, attribute names) of the root and every group and dataset."""
    found: list[tuple[str, list[str]]] = []
    with h5py.File(path, "r") as handle:
        found.append(("/", list(handle.attrs)))
        handle.visititems(lambda name, obj: found.append(("/" + name, list(obj.attrs))))
    return found


def config_keys(path: Path) -> set[str]:
    with h5py.File(path, "r") as handle:
        return set(json.loads(handle["config"][()]))


@pytest.mark.parametrize("model", ["quadratic", "mlp", "mlp-options"])
def test_every_object_of_a_run_file_is_documented(run_files: dict[str, Path], model: str) -> None:
    names = documented()
    missing = []
    for path, attrs in objects(run_files[model]):
        generic = re.sub(r"/(W|b|gamma|beta)\d+$", r"/\1{l}", path)  # MLP layers: /final/W{l}
        group, _, leaf = generic.rpartition("/")
        if path != "/" and generic not in names and not (group == "/metrics" and leaf in names):
            missing.append(path)
        if path == "/config":  # typed copies of the JSON's keys, documented in run.md as options
            attrs = [attr for attr in attrs if attr not in config_keys(run_files[model])]
        missing += [f"{path} @{attr}" for attr in attrs if attr not in names]
    assert not missing, f"objects not documented in docs/schema.md: {missing}"


def test_metric_units_in_the_file_match_the_schema_table(run_files: dict[str, Path]) -> None:
    rows = re.findall(r"^\| `(\w+)` \| (?:both|quadratic|mlp) \| ([^|]+) \|", SCHEMA.read_text(), re.M)
    table = {name: units.strip() for name, units in rows}
    for path in run_files.values():
        with h5py.File(path, "r") as handle:
            for name, dataset in handle["metrics"].items():
                assert dataset.attrs["units"] == table[name], name
                assert dataset.attrs["description"]


def test_xarray_sees_round_as_the_coordinate_without_warnings(run_files: dict[str, Path]) -> None:
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_dataset(run_files["quadratic"], group="metrics", engine="h5netcdf")
    with ds, h5py.File(run_files["quadratic"], "r") as handle:
        assert "round" in ds.coords and ds.loss.dims == ("round",)
        assert list(ds["round"].values) == list(handle["metrics/round"][()])
        assert list(ds.loss.values) == list(handle["metrics/loss"][()])
        assert ds.bytes_up.attrs["units"] == "byte"
        assert float(ds.loss.sel(round=4)) == handle["metrics/loss"][-1]
