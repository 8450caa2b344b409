"""The shape of ``OUT/sweep.json``, checked on every read before any field is used.

A manifest is a file in a directory someone may have sent, edited or damaged: valid JSON
of the wrong shape (a list, ``"runs": "nope"``, a run without an id) must be one line
naming what is wrong, not an ``AttributeError`` somewhere later, and a run's ``file`` may
name only ``RUNID.h5`` in the directory itself (never ``../x.h5`` or an absolute path),
so nothing outside the directory is ever stat'ed, read or moved. docs/sweep.md lists the
fields. A study's manifest (``spec.study`` present) is checked for what the study report
reads as well: each run's ``point`` holds an integer ``batch_size`` and ``seed``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ist_cli.errors import UserError, shown
from ist_cli.io.names import run_file_name
from ist_cli.io.runfile import STATUSES

RUN_STATUSES = (*STATUSES, "pending", "running")
_RUN_ID = re.compile(r"[0-9a-f]{6,64}")
# top-level key -> (type, required); other keys are kept and ignored
_TOP = {"schema": (int, True), "name": (str, False), "sweep_file": (str, False), "spec": (dict, False),
        "created": (str, False), "updated": (str, False), "runs": (list, True)}
_RUN = {"id": (str, True), "point": (dict, False), "config": (dict, False), "status": (str, True),
        "attempts": (int, False), "file": (str, True), "history": (list, False), "error": (str, False)}
_TYPE_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "an array"}


def _typed(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _fields(record: Any, table: dict[str, tuple[type, bool]], where: str, fail: Any) -> None:
    if not isinstance(record, dict):
        fail(f"{where}: {shown(record)} is not allowed; expected an object")
    for key, (kind, required) in table.items():
        if key not in record:
            if required:
                fail(f"{where}.{key}: missing; expected {_TYPE_NAMES[kind]}")
        elif not _typed(record[key], kind):
            fail(f"{where}.{key}: {shown(record[key])} is not allowed; expected {_TYPE_NAMES[kind]}")


def check_manifest(data: Any, path: Path) -> dict[str, Any]:
    """``data`` (parsed ``sweep.json``) if it has a manifest's shape, else a one-line ``UserError``."""

    def fail(problem: str) -> None:
        raise UserError(f"{shown(str(path))} is not a sweep manifest ({problem}); "
                        "expected the sweep.json ist sweep or ist study wrote, unedited")

    _fields(data, _TOP, "manifest", fail)
    seen: set[str] = set()
    study = isinstance(data.get("spec"), dict) and "study" in data["spec"]
    for index, record in enumerate(data["runs"]):
        where = f"runs[{index}]"
        _fields(record, _RUN, where, fail)
        run_id = record["id"]
        if not _RUN_ID.fullmatch(run_id):
            fail(f"{where}.id: {shown(run_id)} is not allowed; expected a run id (lowercase hex digits)")
        if run_id in seen:
            fail(f"{where}.id: {run_id} appears twice; expected each run once")
        seen.add(run_id)
        if record["file"] != run_file_name(run_id):
            fail(f"{where}.file: {shown(record['file'])} is not allowed; expected {run_file_name(run_id)!r} "
                 "(the run's file in the directory itself)")
        if record["status"] not in RUN_STATUSES:
            fail(f"{where}.status: {shown(record['status'])} is not allowed; expected one of {', '.join(RUN_STATUSES)}")
        if "attempts" in record and record["attempts"] < 0:
            fail(f"{where}.attempts: {record['attempts']} is not allowed; expected an integer >= 0")
        if any(not isinstance(entry, dict) for entry in record.get("history", [])):
            fail(f"{where}.history: expected an array of objects")
        if study:
            if "point" not in record:
                fail(f"{where}.point: missing; expected an object (a study's trial)")
            for key in ("batch_size", "seed"):
                if not _typed(record["point"].get(key), int):
                    fail(f"{where}.point.{key}: {shown(record['point'].get(key))} is not allowed; "
                         "expected an integer (a study's trial)")
    if study:
        _check_study_spec(data["spec"], fail)
    return data


def _check_study_spec(spec: dict[str, Any], fail: Any) -> None:
    for table in ("study", "base", "grid", "search"):
        if table in spec and not isinstance(spec[table], dict):
            fail(f"spec.{table}: {shown(spec[table])} is not allowed; expected an object")
    seed = spec.get("base", {}).get("seed", 0)
    if not _typed(seed, int):
        fail(f"spec.base.seed: {shown(seed)} is not allowed; expected an integer")
