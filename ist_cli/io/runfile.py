"""The HDF5 run file (schema 1, docs/schema.md): the coordinator writes it, everyone else reads it.

The writer works on ``NAME.h5.tmp`` and renames it to ``NAME.h5`` only when the run has
ended (completed, diverged or failed), so a file named ``.h5`` is always whole. While the
rounds run, the ``.tmp`` is in SWMR mode, so a live reader
(``h5py.File(path, "r", libver="latest", swmr=True)``) sees whole rows as they land.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ist_cli.io.metric_info import METRICS
from ist_cli.io.names import utc_now

SCHEMA_VERSION = 1
RESULT_STATUSES = ("completed", "diverged")  # the run produced a result (a diverged run is one)
STATUSES = (*RESULT_STATUSES, "failed")  # how a finished run file can end
TMP_SUFFIX = ".tmp"


def error_headline(error: Any) -> str | None:
    """The first line of a stored ``error`` attr (the one the CLI printed); None when there is none."""
    return str(error).strip().splitlines()[0] if error else None


def tmp_path_for(final_path: Path) -> Path:
    return final_path.with_name(final_path.name + TMP_SUFFIX)


class RunFileWriter:
    """Appends metric rows and stores the model; the only HDF5 writer of a run."""

    def __init__(
        self,
        final_path: str | Path,
        *,
        run_id: str,
        config: Mapping[str, Any],
        env: Mapping[str, Any],
        seed: int,
        version: str,
        git_commit: str | None = None,
    ) -> None:
        self.final_path = Path(final_path)
        self.tmp_path = tmp_path_for(self.final_path)
        self._file = h5py.File(self.tmp_path, "w", libver="latest")
        attrs = self._file.attrs
        attrs["schema"] = SCHEMA_VERSION
        attrs["run_id"] = run_id
        attrs["status"] = "running"
        attrs["ist_version"] = version
        attrs["created"] = utc_now()
        attrs["seed"] = int(seed)
        if git_commit:
            attrs["git_commit"] = git_commit
        self._file.create_dataset("config", data=json.dumps(dict(config), sort_keys=True))
        self._file.create_dataset("env", data=json.dumps(dict(env), sort_keys=True))
        self._metrics = self._file.create_group("metrics")
        self._rows = 0
        self._params_rows = 0
        self._closed = False
        self._live = False

    # -- metrics --------------------------------------------------------------------
    def append_metrics(self, row: Mapping[str, float]) -> None:
        """Append one row; every metric dataset keeps the same length as ``/metrics/round``."""
        if self._rows == 0:
            self._create_metrics(row)
        elif set(row) != set(self._metrics.keys()):
            missing = set(self._metrics.keys()) ^ set(row)
            raise ValueError(f"metric row keys changed between rows: {sorted(missing)}")
        for name, value in row.items():
            dataset = self._metrics[name]
            dataset.resize((self._rows + 1,))
            dataset[self._rows] = float(value)
        self._rows += 1
        self._file.flush()

    def _create_metrics(self, row: Mapping[str, float]) -> None:
        """One f8 dataset per metric with ``units``/``description`` attributes; ``round`` is the
        dimension scale of all the others, so netCDF readers (xarray) see it as the coordinate."""
        for name in row:
            dataset = self._metrics.create_dataset(name, shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
            info = METRICS.get(name)
            if info is not None:
                dataset.attrs["units"] = info.units
                dataset.attrs["description"] = info.description
        if "round" in self._metrics:
            scale = self._metrics["round"]
            scale.make_scale("round")
            for name in row:
                if name != "round":
                    self._metrics[name].dims[0].attach_scale(scale)

    @property
    def rows(self) -> int:
        return self._rows

    # -- live (SWMR) phase ------------------------------------------------------------
    def start_live(self) -> None:
        """Enter SWMR mode: from here on only rows are appended to datasets that exist.

        Call it once every dataset the rounds append to exists (the first metrics row, the
        first params snapshot): SWMR forbids creating objects or changing attributes.
        """
        self._file.flush()
        self._file.swmr_mode = True
        self._live = True

    def _end_live(self) -> None:
        """Leave SWMR mode (close and reopen) so the final model and status can be written."""
        if self._live:
            self._file.close()
            self._file = h5py.File(self.tmp_path, "r+", libver="latest")
            self._metrics = self._file["metrics"]
            self._live = False

    # -- arrays ---------------------------------------------------------------------
    def write_group(self, group: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Write whole arrays under ``/group`` (``final``, ``problem``, ...), replacing old ones."""
        self._end_live()
        target = self._file.require_group(group)
        for name, array in arrays.items():
            if name in target:
                del target[name]
            target.create_dataset(name, data=np.asarray(array))
        self._file.flush()

    def append_params(self, round_index: int, x: np.ndarray) -> None:
        """One snapshot row of ``/params/x`` with its round in ``/params/round``."""
        params = self._file.require_group("params")
        if "x" not in params:
            params.create_dataset("x", shape=(0, x.size), maxshape=(None, x.size), dtype="f8")
            params.create_dataset("round", shape=(0,), maxshape=(None,), dtype="f8")
            params["round"].make_scale("round")
            params["x"].dims[0].attach_scale(params["round"])
        row = self._params_rows
        params["x"].resize((row + 1, x.size))
        params["x"][row] = x.ravel()
        params["round"].resize((row + 1,))
        params["round"][row] = round_index
        self._params_rows += 1
        self._file.flush()

    # -- end ------------------------------------------------------------------------
    def close(self, status: str, *, error: str | None = None, extra_attrs: Mapping[str, Any] | None = None) -> Path:
        """Record the final status, close, and rename ``.h5.tmp`` to ``.h5``."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if self._closed:
            return self.final_path
        self._end_live()
        attrs = self._file.attrs
        attrs["status"] = status
        attrs["finished"] = utc_now()
        if error:
            attrs["error"] = error
        for key, value in (extra_attrs or {}).items():
            attrs[key] = value
        self._file.close()
        self._closed = True
        os.replace(self.tmp_path, self.final_path)
        return self.final_path

    def discard(self) -> None:
        """Drop the temporary file (used when the run never really started)."""
        if not self._closed:
            self._file.close()
            self._closed = True
        self.tmp_path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- reading
class RunFileError(Exception):
    """A file that is not a readable schema-1 run file; the message says why."""


@dataclass
class RunData:
    """Everything in a run file, loaded into memory (run files are small)."""

    path: Path
    attrs: dict[str, Any]
    config: dict[str, Any]
    env: dict[str, Any]
    metrics: dict[str, np.ndarray]
    final: dict[str, np.ndarray] = field(default_factory=dict)
    problem: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.attrs.get("status", ""))

    @property
    def run_id(self) -> str:
        return str(self.attrs.get("run_id", ""))


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _text(dataset: h5py.Dataset) -> str:
    value = dataset[()]
    return value.decode() if isinstance(value, bytes) else str(value)


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Only the root attrs (status, run_id, created, ...): cheap, for callers that need no data.

    Raises ``OSError`` when the file cannot be opened as HDF5.
    """
    with h5py.File(path, "r") as handle:
        return {key: _attr(value) for key, value in handle.attrs.items()}


def read_run(path: str | Path, *, load_problem: bool = True) -> RunData:
    """Load a run file; raise ``RunFileError`` for anything that is not a whole schema-1 file."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            attrs = {key: _attr(value) for key, value in handle.attrs.items()}
            schema = attrs.get("schema")
            if schema != SCHEMA_VERSION:
                raise RunFileError(f"unknown schema version {schema!r} (this ist reads schema {SCHEMA_VERSION})")
            if "config" not in handle or "metrics" not in handle:
                raise RunFileError("missing /config or /metrics")
            config = json.loads(_text(handle["config"]))
            env = json.loads(_text(handle["env"])) if "env" in handle else {}
            metrics = {name: handle["metrics"][name][()] for name in handle["metrics"]}
            groups: dict[str, dict[str, np.ndarray]] = {}
            for group in ("final", "problem", "params"):
                if group in handle and (group != "problem" or load_problem):
                    groups[group] = {name: handle[group][name][()] for name in handle[group]}
    except RunFileError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise RunFileError(f"not a readable HDF5 run file ({exc})") from None
    return RunData(path=path, attrs=attrs, config=config, env=env, metrics=metrics, **groups)
