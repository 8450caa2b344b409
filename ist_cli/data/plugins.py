"""Data sets from installed plug-ins (entry point group ``ist_cli.datasets``, docs/extending.md).

A plug-in's entry point is a callable ``load(*, seed: int, dtype: str) -> Dataset``; its name
is the whole ``--dataset`` spec. Read only when a spec is not a built-in one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ist_cli.data.dataset import Dataset
from ist_cli.errors import UserError
from ist_cli.plugins import DATASETS_GROUP, plugins

#: the built-in sources' kinds: a plug-in may not take one of these names
BUILTIN_KINDS = frozenset({"digits", "synthetic", "npz", "mnist", "libsvm", "mnist1d", "fashion-mnist", "cifar10"})


def _problem(name: str, load: Any) -> str | None:
    return None if callable(load) else "expected a callable load(*, seed, dtype) -> ist_cli.data.Dataset"


def plugin_datasets() -> dict[str, Callable[..., Dataset]]:
    """Name -> loader of every installed data set plug-in."""
    return plugins(DATASETS_GROUP, BUILTIN_KINDS, _problem)


def load_plugin_dataset(name: str, *, seed: int, dtype: str) -> Dataset:
    """The plug-in ``name``'s data set, checked to be a ``Dataset`` of ``dtype`` rows."""
    try:
        data = plugin_datasets()[name](seed=seed, dtype=dtype)
    except UserError:
        raise
    except Exception as exc:  # the plug-in's own fault: one line naming it, no traceback
        raise UserError(f"--dataset: plug-in {name!r} failed to load its data ({type(exc).__name__}: {exc}); "
                        "expected it to return an ist_cli.data.Dataset") from None
    if not isinstance(data, Dataset) or data.X_train.dtype != dtype or data.X_train.ndim != 2:
        raise UserError(f"--dataset: plug-in {name!r} returned {type(data).__name__}; expected an "
                        f"ist_cli.data.Dataset with 2-d {dtype} rows")
    return data
