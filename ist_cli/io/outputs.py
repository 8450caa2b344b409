"""Where a command will write: checked before any work, created only when there is something to write.

A bad output path (a file where a directory is expected, a directory where a file is
expected, no write permission) is a one-line ``UserError`` naming the option, found
before a run or a report spends any time, and nothing is created by the check itself.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from ist_cli.errors import UserError, shown


def first_existing(path: Path) -> Path:
    """The nearest ancestor of ``path`` (or ``path`` itself) that exists."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _check_creatable_dir(path: Path, where: str) -> None:
    existing = first_existing(path)
    if not existing.is_dir():
        what = "is not a directory" if existing == path else f"is under {str(existing)!r}, which is not a directory"
        raise UserError(f"{where}: {shown(str(path))} {what}; expected a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{where}: {shown(str(existing))} is not writable; expected a writable directory")


def output_dir(text: str | Path, where: str) -> Path:
    """``text`` as a directory that exists or can be created, without creating it."""
    if str(text).strip() == "":
        raise UserError(f"{where}: '' is not allowed; expected a directory path")
    path = Path(text).expanduser()
    _check_creatable_dir(path, where)
    return path


def output_file(text: str | Path, where: str) -> Path:
    """``text`` as a file that can be written (its directory may still have to be made)."""
    if str(text).strip() == "":
        raise UserError(f"{where}: '' is not allowed; expected a file path")
    path = Path(text).expanduser()
    if path.is_dir():
        raise UserError(f"{where}: {shown(str(path))} is a directory; expected a file path")
    if os.path.lexists(path) and not path.is_file():
        raise UserError(f"{where}: {shown(str(path))} is not a regular file; expected a file path")
    _check_creatable_dir(path.parent, where)
    return path


def make_dir(path: Path, where: str) -> Path:
    """Create ``path`` (and parents) now; a failure (the disk changed since the check) is a UserError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{where}: {shown(str(path))} cannot be created ({exc.strerror}); "
                        "expected a writable directory") from None
    return path


def check_file_name(name: str, directory: Path, suffixes: str, where: str) -> str:
    """``name`` as one file name: non-empty, no ``/``, no leading ``.``, no control
    characters, and short enough for the file system with ``suffixes`` appended."""
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"{where}: {shown(name)} is not allowed; expected a file name without '/' or a leading '.'")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in name):
        raise UserError(f"{where}: {shown(name)} is not allowed; expected no control characters")
    try:
        limit = os.pathconf(first_existing(directory), "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    length = len((name + suffixes).encode("utf-8", "surrogateescape"))
    if length > limit:
        raise UserError(f"{where}: {shown(name)} is too long ({length} bytes with {suffixes!r}); "
                        f"expected at most {limit - len(suffixes)} bytes")
    return name
