"""Run files as data: a directory of runs as one table, and their metric series as one array.

``scan_runs`` reads with h5py only (``ist ls`` uses it in the terminal); ``load_runs`` turns
the same rows into a pandas ``DataFrame`` and ``RunTable.curves()`` the series into an xarray
``Dataset``. pandas and xarray are the ``[notebook]`` extra: the run itself never needs them::

    from ist_cli import load_runs
    runs = load_runs("results/my-sweep")           # one row per finished run
    ist = runs[runs.algorithm == "ist"]
    curves = ist.curves()                          # dims (run, round)
    curves.loss.mean("run")
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ist_cli.errors import UserError, install_hint
from ist_cli.io.runfile import TMP_SUFFIX, RunData, RunFileError, error_headline, read_run
from ist_cli.report.load import find_run_files
from ist_cli.report.metrics import final_value

#: root attributes that become columns (provenance and outcome); the config is its own columns
ATTR_COLUMNS = ("status", "run_id", "created", "finished", "rounds_completed", "ist_version", "git_commit",
                "git_dirty", "git_diff_sha256", "transport", "goal_reached", "steps_to_result", "step_budget",
                "budget_stopped")
PROVENANCE = ("git_commit", "git_dirty", "git_diff_sha256")
#: columns that come first in every table, in this order
LEAD_COLUMNS = ("name", "status", "model", "algorithm")


@dataclass
class Scan:
    """What a directory holds: finished runs as rows, unfinished ``.h5.tmp`` files, and files
    that are not readable run files (with the reason)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    unfinished: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def run_row(run: RunData, name: str) -> dict[str, Any]:
    """One run as a flat mapping: name, path, outcome and provenance attributes, every config
    key, and each metric's final value (a completed run's last measured value; a diverged
    run's last row, see ``report.metrics.final_value``)."""
    row: dict[str, Any] = {"name": name, "path": str(run.path)}
    for key in ATTR_COLUMNS:
        if key in run.attrs or key in PROVENANCE:  # provenance always: None outside a git checkout
            row[key] = run.attrs.get(key)
    row["error"] = error_headline(run.attrs.get("error"))
    for key, value in run.config.items():
        row[key] = tuple(value) if isinstance(value, list) else value
    for metric in run.metrics:
        if metric != "round":
            row[metric] = final_value(run, metric)
    return row


def scan_runs(directory: str | Path) -> Scan:
    """Every run file under ``directory`` (recursively), read with h5py; rows sorted by name."""
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"{str(root)!r} is not a directory; expected a directory of run files")
    scan = Scan()
    try:
        paths = find_run_files([root])
    except UserError:  # an empty directory is an empty table
        return scan
    for path in paths:
        if path.name.endswith(TMP_SUFFIX):
            scan.unfinished.append(path)
            continue
        try:
            run = read_run(path, load_problem=False)
        except RunFileError as exc:
            scan.unreadable.append((path, str(exc)))
            continue
        scan.rows.append(run_row(run, path.relative_to(root).as_posix().removesuffix(".h5")))
    return scan


def parse_where(terms: Iterable[str]) -> list[tuple[str, str]]:
    """``KEY=VALUE`` filters; a term without ``=`` is a ``UserError``."""
    filters = []
    for term in terms:
        key, sep, value = term.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--where {term!r} is not KEY=VALUE; expected e.g. --where algorithm=ist")
        filters.append((key.strip(), value.strip()))
    return filters


def _matches(value: Any, wanted: str) -> bool:
    """A cell equals the text typed: as a number when both are numbers, else as shown."""
    if isinstance(value, bool) or wanted.lower() in ("true", "false"):
        return str(value).lower() == wanted.lower()
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            return float(value) == float(wanted)
        except ValueError:
            return False
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) == wanted.replace(" ", "")
    return str(value) == wanted


def select(rows: list[dict[str, Any]], filters: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The rows every filter matches; a key no row has is a ``UserError`` naming the columns."""
    columns = {key for row in rows for key in row}
    for key, _ in filters:
        if rows and key not in columns:
            raise UserError(f"--where {key!r}: no run has this column; expected one of {', '.join(sorted(columns))}")
    return [row for row in rows if all(key in row and _matches(row[key], wanted) for key, wanted in filters)]


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"ist_cli.load_runs needs {module}, which is not installed; expected the notebook extra: "
                        f"{install_hint('notebook')}") from None


def _ordered(columns: Iterable[str]) -> list[str]:
    seen = list(dict.fromkeys(columns))
    return [c for c in LEAD_COLUMNS if c in seen] + [c for c in seen if c not in LEAD_COLUMNS]


def load_runs(directory: str | Path, *, where: Mapping[str, Any] | None = None) -> Any:
    """The finished runs under ``directory`` as a ``RunTable`` (a pandas ``DataFrame``): one
    row per run file, indexed by ``name`` (the file's path under ``directory`` without
    ``.h5``); columns: outcome and provenance (``status``, ``run_id``, ``git_commit``,
    ``git_dirty``, ...), every setting of ``/config``, and each metric's final value.
    Failed runs are rows too (``status``, ``error``); ``.h5.tmp`` files are not.
    ``where`` keeps the rows whose columns equal the given values."""
    _optional("pandas")
    rows = scan_runs(directory).rows
    if where:
        rows = select(rows, [(key, str(value)) for key, value in where.items()])
    frame = RunTable(rows, columns=_ordered(key for row in rows for key in row) or ["name", "path", *LEAD_COLUMNS[1:]])
    frame = frame.set_index("name", drop=False)
    frame.index.name = "run"
    return frame


def _make_run_table() -> type:
    pd = _optional("pandas")

    class RunTable(pd.DataFrame):
        """A ``DataFrame`` of runs (``load_runs``); ``curves()`` gives their metric series."""

        @property
        def _constructor(self) -> type:
            return RunTable

        def curves(self) -> Any:
            """The metric series of these runs as an xarray ``Dataset`` with dims
            (``run``, ``round``): one variable per metric, NaN where a run has no row at that
            round (runs evaluated at different rounds, or stopped early). ``step`` (SGD steps,
            MLP runs) is a variable like the others; ``run_id`` is a coordinate along ``run``."""
            return curves(self["path"].tolist(), self.index.tolist())

    return RunTable


def curves(paths: list[str], names: list[str]) -> Any:
    """The series of the run files ``paths``, labelled ``names``, as one xarray ``Dataset``."""
    xr = _optional("xarray")
    if not paths:
        return xr.Dataset(coords={"run": np.array([], dtype=object), "round": np.array([], dtype=np.int64)})
    runs = [read_run(path, load_problem=False) for path in paths]
    rounds = np.unique(np.concatenate([np.asarray(run.metrics["round"], dtype=np.int64) for run in runs]))
    metrics = sorted({name for run in runs for name in run.metrics if name != "round"})
    data = {name: np.full((len(runs), rounds.size), np.nan) for name in metrics}
    for i, run in enumerate(runs):
        columns = np.searchsorted(rounds, np.asarray(run.metrics["round"], dtype=np.int64))
        for name in metrics:
            if name in run.metrics:
                data[name][i, columns] = run.metrics[name]
    variables = {name: (("run", "round"), values) for name, values in data.items()}
    return xr.Dataset(variables, coords={"run": list(names), "round": rounds,
                                         "run_id": ("run", [run.run_id for run in runs])})


class _RunTableProxy:
    """``RunTable(...)`` builds the pandas subclass on first call (pandas imported then)."""

    _cls: type | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _RunTableProxy._cls is None:
            _RunTableProxy._cls = _make_run_table()
        return _RunTableProxy._cls(*args, **kwargs)


RunTable = _RunTableProxy()
