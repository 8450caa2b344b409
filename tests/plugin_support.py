"""Plug-ins for the tests: an example package pip-installed into this environment for the span of
a test, and a fake installed distribution that holds only entry points."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ist_cli.plugins import TOLD

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


@contextmanager
def installed_example(name: str, tmp_path: Path) -> Iterator[None]:
    """The distribution ``examples/NAME`` pip-installed while the block runs, then uninstalled. It
    is built from a copy in ``tmp_path``, so its build files land there, not in the repository."""
    source = tmp_path / "src"
    shutil.copytree(EXAMPLES / name, source)
    pip("install", "--no-deps", "--no-build-isolation", "--quiet", str(source))
    try:
        yield
    finally:
        pip("uninstall", "--yes", "--quiet", name)


def fake_distribution(folder: Path, entry_points: str) -> dict[str, str]:
    """An installed distribution on ``PYTHONPATH`` holding only the entry points ``ist`` reads."""
    info = folder / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    env = {key: value for key, value in os.environ.items() if key != TOLD}  # this process may have read them
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}
