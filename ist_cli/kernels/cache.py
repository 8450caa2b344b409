"""Whether numba's on-disk cache already holds a run's kernels (the first run compiles them)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

#: kernels this process found in the cache: a process (a warm trial server, and the runs it forks)
#: that found one need not read its index again; a kernel it loaded does not compile here again
_FRESH: set[Any] = set()


def warmed_kernels(preload: Sequence[str]) -> list[Any]:
    """The kernels the warm-ups among ``preload`` (``runtime.forkserver`` entries) compile: those a
    warm-up names (its ``kernels``), or every kernel of its module when it names none."""
    # numba is imported here, not with this module: ``ist run`` imports this module before it
    # starts the fork server, which should begin warming the workers' kernels while this
    # process imports numba (150 ms), not after
    from numba.core.registry import CPUDispatcher

    found = []
    for entry in preload:
        module_name, _, call = entry.partition(":")
        if not call:
            continue
        module = importlib.import_module(module_name)
        kernels = getattr(getattr(module, call.partition(":")[0]), "kernels", None)
        if kernels is None:
            kernels = [value for value in vars(module).values() if isinstance(value, CPUDispatcher)]
        found.extend(kernel for kernel in kernels if kernel not in found)
    return found


def kernels_cached(preload: Sequence[str]) -> bool | None:
    """True when every kernel the warm-ups of ``preload`` compile has a fresh index in numba's
    cache (its source unchanged since it was written); False when one has none, so the run
    compiles; None when it cannot be told (no warm-up among the entries, or numba's cache
    internals differ from the ones read here)."""
    try:
        kernels = warmed_kernels(preload)
        for kernel in kernels:
            if kernel in _FRESH:
                continue
            if kernel._cache is not None and hasattr(kernel._cache, "_cache_file") \
                    and not kernel._cache._cache_file._load_index():
                return False
            _FRESH.add(kernel)
    except Exception:  # noqa: BLE001 - a private API of numba, a plug-in's entries: unknown, never an error of the run
        return None
    return True if kernels else None
