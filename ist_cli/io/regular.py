"""Paths that are read as files are checked with ``stat`` before anything opens them.

Opening a FIFO for reading blocks until a writer appears, and a character device may be
read without end, so a path that exists but is not a regular file is refused by name
(``stat`` follows symlinks and opens nothing). Used wherever ``ist`` reads a file it was
given or finds one in a directory: TOML files, ``sweep.json``, run files, data files.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ist_cli.errors import UserError, shown

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class NotRegularFile(OSError):
    """A path that exists but is not a regular file (an ``OSError``: callers that treat an
    unreadable file as such need no new case)."""


def kind_of(path: str | Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file ("a FIFO", ...); else None.
    A path that cannot be stat'ed at all (missing, NUL byte, permission) is left to the opener."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_regular(path: str | Path) -> None:
    """Raise ``NotRegularFile`` (never opening ``path``) when it exists and is not a regular file."""
    kind = kind_of(path)
    if kind is not None:
        raise NotRegularFile(f"{shown(str(path))} is {kind}, not a regular file")


def regular_file(path: str | Path, where: str, expects: str) -> Path:
    """``path`` unless it exists and is not a regular file: then a one-line ``UserError``."""
    kind = kind_of(path)
    if kind is not None:
        raise UserError(f"{where}: {shown(str(path))} is {kind}, not a regular file; expected {expects}")
    return Path(path)
