"""Plug-ins: methods, data sets and sketches that other installed packages register through Python entry
points (docs/extending.md), so that ``pip install`` adds them and ``pip uninstall`` removes them.

Each group is read once per process, when first asked for: a plug-in that cannot be loaded,
or whose name is taken by a built-in, costs one ``ist: warning:`` line naming it and is left
out, never a traceback. This module knows nothing of what a plug-in is; its callers check that.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

METHODS_GROUP = "ist_cli.methods"  # name -> a ``MethodPlan`` subclass (ist_cli.algorithms.plans)
DATASETS_GROUP = "ist_cli.datasets"  # name -> load(*, seed, dtype) -> ``Dataset`` (ist_cli.data.plugins)
SKETCHES_GROUP = "ist_cli.sketches"  # name -> a ``Sketch`` subclass (ist_cli.models.sketches)
#: groups whose left-out plug-ins this process or a parent has reported: worker processes and
#: MPI ranks, which inherit the environment, do not repeat the lines
TOLD = "IST_CLI_PLUGINS_TOLD"


def skip(group: str, name: str, value: str, why: str) -> None:
    """The one line a plug-in left out costs (once per command, not once per process)."""
    if group not in os.environ.get(TOLD, "").split(","):
        print(f"ist: warning: plug-in {name!r} ({value}) is ignored: {why}", file=sys.stderr)


@functools.cache
def plugins(group: str, reserved: frozenset[str], check: Callable[[str, Any], str | None]) -> dict[str, Any]:
    """Name -> loaded object of ``group``'s entry points, less those named as a ``reserved``
    built-in (never imported) and those that cannot be loaded or that ``check`` ((name,
    object) -> what is wrong, or None) rejects. Once per process for the same arguments."""
    found = {}
    for point in sorted(entry_points(group=group), key=lambda point: point.name):
        if point.name in reserved:
            skip(group, point.name, point.value, "its name is a built-in's")
            continue
        try:
            loaded = point.load()
        except Exception as exc:  # a plug-in's own fault, whatever it is: reported on one line
            reason = str(exc).splitlines()[0] if str(exc) else ""
            skip(group, point.name, point.value, f"it cannot be loaded ({type(exc).__name__}: {reason})")
            continue
        problem = check(point.name, loaded)
        if problem:
            skip(group, point.name, point.value, problem)
            continue
        found[point.name] = loaded
    os.environ[TOLD] = ",".join(filter(None, {*os.environ.get(TOLD, "").split(","), group}))
    return found
