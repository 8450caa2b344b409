"""The HDF5 run file (schema 1, docs/schema.md): the coordinator writes it, everyone else reads it.

The writer works on ``NAME.h5.tmp`` and renames it to ``NAME.h5`` only when the run has
ended (completed, diverged or failed), so a file named ``.h5`` is always whole. While the
rounds run, the ``.tmp`` is in SWMR mode, so a live reader
(``h5py.File(path, "r", libver="latest", swmr=True)``) sees whole rows as they land.

The ``.tmp`` is claimed before HDF5 touches it: an exclusive lock on the file, held
until the run file is renamed. A second writer of the same name finds the lock taken and
is refused (it never truncates a live run's file); the kernel drops the lock when its
holder dies however it dies, so a dead run's ``.tmp`` is simply reclaimed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ist_cli.io.metric_info import METRICS
from ist_cli.io.names import utc_now
from ist_cli.io.regular import check_regular
from ist_cli.io.sliced import SlicedArray

SCHEMA_VERSION = 1
RESULT_STATUSES = ("completed", "diverged")  # the run produced a result (a diverged run is one)
STATUSES = (*RESULT_STATUSES, "failed")  # how a finished run file can end
TMP_SUFFIX = ".tmp"
INTEGER_METRICS = frozenset({"round"})  # stored as int64 (files written before: float64, read the same)
LIVE_FLUSH_SECONDS = 1.0  # a metrics row reaches the file (and live readers) at most this long after it is appended


def typed_config_attrs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as typed HDF5 attributes of ``/config``: a tool that cannot parse JSON reads
    ``lr`` as a float64 and ``hidden`` as an int64 array. Nulls have no attribute; the JSON
    string stays the reference (``run_id`` hashes it)."""
    attrs: dict[str, Any] = {}
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, bool):
            attrs[key] = np.bool_(value)
        elif isinstance(value, int):
            attrs[key] = np.int64(value)
        elif isinstance(value, float):
            attrs[key] = np.float64(value)
        elif isinstance(value, str):
            attrs[key] = value
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool)
                                                                for v in value):
            attrs[key] = np.asarray(value, dtype=np.int64)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                for v in value):
            attrs[key] = np.asarray(value, dtype=np.float64)
        else:  # anything else (an empty list, a mapping) only in the JSON
            continue
    return attrs


def error_headline(error: Any) -> str | None:
    """The first line of a stored ``error`` attr (the one the CLI printed); None when there is none."""
    return str(error).strip().splitlines()[0] if error else None


def tmp_path_for(final_path: Path) -> Path:
    return final_path.with_name(final_path.name + TMP_SUFFIX)


_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)


def _lock_exclusive(fd: int) -> None:
    """Write-lock the whole file held by ``fd``, without waiting.

    Linux: an open-file-description lock (``F_OFD_SETLK``), which belongs to this descriptor
    alone (HDF5 opening and closing the same file does not drop it) and does not conflict
    with the ``flock`` that HDF5 readers take, so live SWMR readers still get in.
    Elsewhere: ``flock``.
    """
    if _OFD_SETLK is None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    request = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)  # struct flock: the whole file
    fcntl.fcntl(fd, _OFD_SETLK, request)


class RunFileBusy(Exception):
    """Another live process is writing this run file."""


def claim_tmp(tmp_path: Path) -> int:
    """Open ``tmp_path`` (created if absent) and lock it exclusively; return the descriptor.

    Raises ``RunFileBusy`` when a live process holds it. Nothing is truncated here.
    """
    fd = os.open(tmp_path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
    try:
        _lock_exclusive(fd)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise RunFileBusy(str(tmp_path)) from None
        raise
    return fd


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
        git_dirty: bool | None = None,
        git_diff_sha256: str | None = None,
        replace: bool = True,
    ) -> None:
        """Claim ``NAME.h5.tmp`` and start it; ``RunFileBusy`` if a live writer holds it,
        ``FileExistsError`` if ``NAME.h5`` exists and ``replace`` is false."""
        self.final_path = Path(final_path)
        self.tmp_path = tmp_path_for(self.final_path)
        self._claim: int | None = claim_tmp(self.tmp_path)
        self._file: h5py.File | None = None
        self._closed = False
        try:
            if self.final_path.exists() and not replace:  # finished while this run started
                raise FileExistsError(errno.EEXIST, "a finished run file exists", str(self.final_path))
            self._file = h5py.File(self.tmp_path, "w", libver="latest")
            self._start(run_id=run_id, config=config, env=env, seed=seed, version=version, git_commit=git_commit,
                        git_dirty=git_dirty, git_diff_sha256=git_diff_sha256)
        except BaseException:
            self._abandon()  # nothing half-made survives a failed start
            raise

    def _start(self, *, run_id: str, config: Mapping[str, Any], env: Mapping[str, Any], seed: int, version: str,
               git_commit: str | None, git_dirty: bool | None, git_diff_sha256: str | None) -> None:
        attrs = self._file.attrs
        attrs["schema"] = SCHEMA_VERSION
        attrs["run_id"] = run_id
        attrs["status"] = "running"
        attrs["ist_version"] = version
        attrs["created"] = utc_now()
        attrs["seed"] = int(seed)
        if git_commit:
            attrs["git_commit"] = git_commit
        if git_dirty is not None:
            attrs["git_dirty"] = bool(git_dirty)
        if git_diff_sha256:
            attrs["git_diff_sha256"] = git_diff_sha256
        config_node = self._file.create_dataset("config", data=json.dumps(dict(config), sort_keys=True))
        for key, value in typed_config_attrs(config).items():
            config_node.attrs[key] = value
        self._file.create_dataset("env", data=json.dumps(dict(env), sort_keys=True))
        self._metrics = self._file.create_group("metrics")
        self._rows = 0
        self._names: list[str] = []  # metric names in row order, set by the first row
        self._pending: list[list[float]] = []  # rows appended, not yet in the file
        self._written_at = 0.0
        self._params_rows = 0
        self._live = False

    # -- metrics --------------------------------------------------------------------
    def append_metrics(self, row: Mapping[str, float]) -> None:
        """Append one row; every metric dataset keeps the same length as ``/metrics/round``.

        Rows reach the file in batches: the first at once, then whatever has accumulated
        once ``LIVE_FLUSH_SECONDS`` have passed, and the rest before the file is finished.
        Writing one row costs every metric dataset a resize, a write and the file a flush
        (most of a small study trial's time when it was done row by row); a batch costs that
        once. The file ends the same either way; only a killed run's ``.tmp`` lacks the last
        second's rows.
        """
        if self._rows == 0:
            self._create_metrics(row)
            self._names = list(row)
        elif len(row) != len(self._names) or set(row) != set(self._names):
            missing = set(self._names) ^ set(row)
            raise ValueError(f"metric row keys changed between rows: {sorted(missing)}")
        self._pending.append([float(row[name]) for name in self._names])
        self._rows += 1
        if self._rows == 1 or time.monotonic() - self._written_at >= LIVE_FLUSH_SECONDS:
            self._write_pending()

    def _write_pending(self) -> None:
        """Write the rows appended since the last write, and flush."""
        if not self._pending:
            return
        values = np.asarray(self._pending, dtype=np.float64)
        start = self._rows - values.shape[0]
        for column, name in enumerate(self._names):
            dataset = self._metrics[name]
            dataset.resize((self._rows,))
            dataset[start:self._rows] = values[:, column]
        self._pending.clear()
        self._file.flush()
        self._written_at = time.monotonic()

    def _create_metrics(self, row: Mapping[str, float]) -> None:
        """One f8 dataset per metric with ``units``/``description`` attributes; ``round`` is the
        dimension scale of all the others, so netCDF readers (xarray) see it as the coordinate."""
        for name in row:
            dtype = "i8" if name in INTEGER_METRICS else "f8"
            dataset = self._metrics.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(256,))
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
        self._write_pending()
        self._file.flush()
        self._file.swmr_mode = True
        self._live = True

    def _end_live(self) -> None:
        """Leave SWMR mode (close and reopen) so the final model and status can be written."""
        self._write_pending()
        if self._live:
            self._file.close()
            self._file = h5py.File(self.tmp_path, "r+", libver="latest")
            self._metrics = self._file["metrics"]
            self._live = False

    # -- per-round costs (/rounds) ------------------------------------------------------
    def create_rounds(self, columns: Mapping[str, tuple[int, ...]]) -> None:
        """Create ``/rounds``, one empty dataset per column (``name -> (shape of one round,)``),
        before the live phase; ``append_rounds`` then adds rows."""
        group = self._file.create_group("rounds")
        for name, row_shape in columns.items():
            dtype = "i8" if name == "round" else "f8"
            group.create_dataset(name, shape=(0, *row_shape), maxshape=(None, *row_shape), dtype=dtype,
                                 chunks=(max(1, 4096 // max(1, int(np.prod(row_shape)))), *row_shape))

    def append_rounds(self, columns: Mapping[str, np.ndarray]) -> None:
        """Append rows to ``/rounds`` (every column the same number of rows)."""
        group = self._file["rounds"]
        for name, values in columns.items():
            dataset = group[name]
            start = dataset.shape[0]
            dataset.resize((start + len(values), *dataset.shape[1:]))
            dataset[start:] = values
        self._file.flush()

    # -- arrays ---------------------------------------------------------------------
    def write_group(self, group: str, arrays: Mapping[str, np.ndarray | SlicedArray]) -> None:
        """Write arrays under ``/group`` (``final``, ``problem``, ...), replacing old ones; a
        ``SlicedArray`` block by block into a dataset of its shape (the same layout as a whole one)."""
        self._end_live()
        target = self._file.require_group(group)
        for name, array in arrays.items():
            if name in target:
                del target[name]
            if isinstance(array, SlicedArray):
                dataset = target.create_dataset(name, shape=array.shape, dtype=array.dtype)
                for where, values in array.blocks():
                    dataset[where] = values
            else:
                target.create_dataset(name, data=np.asarray(array))
        self._file.flush()

    def append_params(self, round_index: int, x: np.ndarray) -> None:
        """One snapshot row of ``/params/x`` with its round in ``/params/round``."""
        params = self._file.require_group("params")
        if "x" not in params:
            params.create_dataset("x", shape=(0, x.size), maxshape=(None, x.size), dtype="f8")
            params.create_dataset("round", shape=(0,), maxshape=(None,), dtype="i8")
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
        self._release()
        return self.final_path

    def discard(self) -> None:
        """Drop the temporary file (used when the run never really started)."""
        self._abandon()

    def _abandon(self) -> None:
        """Close without finishing and remove the ``.tmp``; never raises."""
        if not self._closed:
            self._closed = True
            if self._file is not None:
                try:
                    self._file.close()
                except Exception:  # noqa: BLE001 - the file may be gone or half-open; it is deleted next
                    pass
        try:
            self.tmp_path.unlink(missing_ok=True)
        except OSError:
            pass
        self._release()

    def _release(self) -> None:
        if self._claim is not None:
            os.close(self._claim)  # drops the flock
            self._claim = None


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
    rounds: dict[str, np.ndarray] = field(default_factory=dict)

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


READ_LIMIT_BYTES = 1 << 30  # no dataset of a run file is read whole beyond this (ist writes far less)


def _dataset(node: Any, where: str) -> h5py.Dataset:
    """``node`` as a numeric dataset small enough to read whole, or ``RunFileError`` saying why."""
    if not isinstance(node, h5py.Dataset):
        raise RunFileError(f"{where} is not a dataset")
    if node.dtype.kind not in "biuf":
        raise RunFileError(f"{where} has dtype {node.dtype}; expected numbers")
    nbytes = int(np.prod(node.shape, dtype=object)) * node.dtype.itemsize
    if nbytes > READ_LIMIT_BYTES:
        raise RunFileError(f"{where} declares shape {node.shape} ({nbytes} bytes); "
                           f"expected at most {READ_LIMIT_BYTES} bytes")
    return node


def _json_object(handle: h5py.File, name: str) -> dict[str, Any]:
    """A scalar string dataset holding a JSON object (``/config``, ``/env``)."""
    node = handle[name]
    if not isinstance(node, h5py.Dataset) or node.shape != () or node.dtype.kind not in "SOU":
        raise RunFileError(f"/{name} is not a JSON string")
    value = node[()]
    text = value.decode() if isinstance(value, bytes) else str(value)
    if len(text) > READ_LIMIT_BYTES:
        raise RunFileError(f"/{name} is {len(text)} characters long")
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        raise RunFileError(f"/{name} is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise RunFileError(f"/{name} is a JSON {type(parsed).__name__}; expected a JSON object")
    return parsed


def _metrics(group: Any) -> dict[str, np.ndarray]:
    """``/metrics``: 1-D numeric datasets, all of one length."""
    if not isinstance(group, h5py.Group):
        raise RunFileError("/metrics is not a group")
    datasets = {name: _dataset(group[name], f"/metrics/{name}") for name in group}
    lengths = {name: node.shape for name, node in datasets.items()}
    for name, shape in lengths.items():
        if len(shape) != 1:
            raise RunFileError(f"/metrics/{name} has shape {shape}; expected one dimension")
    if len({shape[0] for shape in lengths.values()}) > 1:
        shown = ", ".join(f"{name} {shape[0]}" for name, shape in list(lengths.items())[:4])
        raise RunFileError(f"/metrics datasets differ in length ({shown}, ...); expected one length")
    return {name: _integer_rounds(name, node[()]) for name, node in datasets.items()}


def _integer_rounds(name: str, values: np.ndarray) -> np.ndarray:
    """``round`` as int64 whatever wrote it: files before the change hold whole float64s."""
    if name in INTEGER_METRICS and values.dtype.kind == "f" and np.all(np.isfinite(values)) \
            and np.all(values == np.round(values)):
        return values.astype(np.int64)
    return values


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Only the root attrs (status, run_id, created, ...): cheap, for callers that need no data.

    Raises ``OSError`` when the file cannot be opened as HDF5.
    """
    check_regular(path)  # a FIFO would block HDF5's open for ever
    with h5py.File(path, "r") as handle:
        return {key: _attr(value) for key, value in handle.attrs.items()}


def read_run(path: str | Path, *, load_problem: bool = True) -> RunData:
    """Load a run file; raise ``RunFileError`` for anything that is not a whole schema-1 file.

    Every dataset's declared shape and type are checked before it is read, so a damaged or
    hostile file is refused with a reason rather than read into memory whole.
    """
    path = Path(path)
    try:
        check_regular(path)
        with h5py.File(path, "r") as handle:
            attrs = {key: _attr(value) for key, value in handle.attrs.items()}
            schema = attrs.get("schema")
            if schema != SCHEMA_VERSION:
                raise RunFileError(f"unknown schema version {schema!r} (this ist reads schema {SCHEMA_VERSION})")
            if "config" not in handle or "metrics" not in handle:
                raise RunFileError("missing /config or /metrics")
            config = _json_object(handle, "config")
            env = _json_object(handle, "env") if "env" in handle else {}
            metrics = _metrics(handle["metrics"])
            groups: dict[str, dict[str, np.ndarray]] = {}
            for group in ("final", "problem", "params", "rounds"):
                if group in handle and (group != "problem" or load_problem):
                    if not isinstance(handle[group], h5py.Group):
                        raise RunFileError(f"/{group} is not a group")
                    groups[group] = {name: _integer_rounds(name, _dataset(handle[group][name], f"/{group}/{name}")[()])
                                     for name in handle[group]}
    except RunFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise RunFileError(f"not a readable HDF5 run file ({exc})") from None
    return RunData(path=path, attrs=attrs, config=config, env=env, metrics=metrics, **groups)
