"""Write a small file so that a reader sees it whole or not at all, never half.

Both writers go through a hidden per-process temporary beside the target,
``.NAME.PID.tmp``; ``temporary_writer_pid`` reads the PID back, so whoever finds one
left by a killed process can tell it from a live writer's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_TEMPORARY_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")


def _temporary_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def temporary_writer_pid(name: str) -> int | None:
    """The writer PID in a temporary's file name, None for any other name."""
    match = _TEMPORARY_NAME.match(name)
    return int(match.group(1)) if match else None


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text``: write the temporary, fsync, rename over ``path``."""
    path = Path(path)
    tmp = _temporary_beside(path)
    try:
        _write_synced(tmp, text.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def create_exclusive(path: str | Path, data: bytes) -> Path:
    """Create ``path`` holding ``data``, or raise ``FileExistsError``: never over a file.

    The temporary is hard-linked to ``path`` (``link`` fails if ``path`` exists, like
    ``O_EXCL``), so ``path`` never exists empty or half-written.
    """
    path = Path(path)
    tmp = _temporary_beside(path)
    try:
        _write_synced(tmp, data)
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
