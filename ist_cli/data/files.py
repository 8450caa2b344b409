"""Path checks shared by the file-based loaders, so every missing or unreadable file is
reported the same way: one line naming the path and what was expected."""

from __future__ import annotations

from pathlib import Path

from ist_cli.errors import UserError


def existing_file(text: str, where: str, expects: str) -> Path:
    """``text`` as a path to a readable regular file, or a UserError naming it."""
    path = Path(text).expanduser()
    if not path.exists():
        raise UserError(f"{where}: file {str(path)!r} does not exist; expected {expects}")
    if not path.is_file():
        raise UserError(f"{where}: {str(path)!r} is not a file; expected {expects}")
    return path


def existing_dir(text: str, where: str, expects: str) -> Path:
    """``text`` as a path to a directory, or a UserError naming it."""
    path = Path(text).expanduser()
    if not path.exists():
        raise UserError(f"{where}: directory {str(path)!r} does not exist; expected {expects}")
    if not path.is_dir():
        raise UserError(f"{where}: {str(path)!r} is not a directory; expected {expects}")
    return path
