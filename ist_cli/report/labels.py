"""How groups are named in legends and tables: method names, ``4 workers``, ``n = 3``.

Defaults name the methods as papers do (IST, DP, local SGD) and a count with its noun in the
right number; a user's map (``--label algorithm=ist:IST,dp:DP``, repeatable, or a
``[labels.KEY]`` table of the sweep file, ``ist = "IST"``) replaces any of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ist_cli.errors import UserError
from ist_cli.report.table import show

METHOD_NAMES = {"ist": "IST", "dp": "DP", "local-sgd": "local SGD", "gd": "GD", "dcgd": "DCGD",
                "single": "single worker", "resist": "ResIST"}
DEFAULT_LABELS: dict[str, dict[str, str]] = {"algorithm": METHOD_NAMES}
# keys whose value is a count: shown as "4 workers", "1 worker"
COUNT_NOUNS = {"workers": ("worker", "workers"), "local_steps": ("local step", "local steps"),
               "rounds": ("round", "rounds")}

Labels = dict[str, dict[str, str]]


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 run``, ``2 runs``: the count with its noun in the right number."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"


def parse_label_options(items: Iterable[str]) -> Labels:
    """``KEY=VALUE:LABEL[,VALUE:LABEL...]`` strings into {key: {value: label}}; one-line
    ``UserError`` on a malformed one."""
    labels: Labels = {}
    for item in items:
        key, sep, pairs = item.partition("=")
        if not sep or not key.strip() or not pairs.strip():
            raise UserError(f"--label: {item!r} is not allowed; expected KEY=VALUE:LABEL[,VALUE:LABEL...], "
                            "e.g. algorithm=ist:IST,dp:DP")
        for pair in pairs.split(","):
            value, sep, label = pair.partition(":")
            if not sep or not value.strip() or not label.strip():
                raise UserError(f"--label: {pair!r} in {item!r} is not allowed; expected VALUE:LABEL, e.g. ist:IST")
            labels.setdefault(key.strip().replace("-", "_"), {})[value.strip()] = label.strip()
    return labels


def sweep_labels(paths: Iterable[str | Path]) -> Labels:
    """The ``[labels]`` tables of the sweep files behind ``paths``: the file named in their
    ``sweep.json`` when it is still there (labels may be added after the runs), else the copy
    the manifest keeps."""
    from ist_cli.config import load_toml
    from ist_cli.sweep.manifest import read_manifest

    labels: Labels = {}
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            continue
        try:
            manifest = read_manifest(path) or {}
        except UserError:
            continue
        table = manifest.get("spec", {}).get("labels", {})
        source = Path(str(manifest.get("sweep_file", "")))
        if source.is_file():
            try:
                table = load_toml(source).get("labels", table)
            except UserError:
                pass
        for key, mapping in table.items() if isinstance(table, Mapping) else ():
            if isinstance(mapping, Mapping):
                labels.setdefault(key, {}).update({str(v): str(label) for v, label in mapping.items()})
    return labels


def merged(*layers: Labels) -> Labels:
    """Later layers win, value by value."""
    out: Labels = {key: dict(values) for key, values in DEFAULT_LABELS.items()}
    for layer in layers:
        for key, values in layer.items():
            out.setdefault(key, {}).update(values)
    return out


def value_label(key: str, value: Any, labels: Labels | None = None) -> str:
    """How one grouping value reads: the user's label, a method name, ``4 workers``, ``lr = 0.1``."""
    labels = DEFAULT_LABELS if labels is None else labels
    text = show(value)
    if text in labels.get(key, {}):
        return labels[key][text]
    if key in COUNT_NOUNS and isinstance(value, int) and not isinstance(value, bool):
        return plural(value, *COUNT_NOUNS[key])
    return f"{key} = {text}"


def group_label(key: Mapping[str, Any], labels: Labels | None = None, n: int | None = None) -> str:
    """A group's legend entry: its values' labels joined, and ``(n = 3)`` when given. A key
    the group's runs do not have (None: GD has no sketch) is left out, unless a label names it."""
    labels = DEFAULT_LABELS if labels is None else labels
    text = ", ".join(value_label(k, v, labels) for k, v in key.items()
                     if v is not None or show(v) in labels.get(k, {})) or "all runs"
    return text if n is None else f"{text} (n = {n})"
