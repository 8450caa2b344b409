"""Every command in README.md, docs/*.md and experiments/README.md runs as written, from a fresh copy of the repository.

The convention (also in docs/contributing.md), for anyone adding documentation:

- A fenced block tagged ``bash`` (or ``sh``/``shell``) is run whole with ``bash -eo pipefail``;
  a block tagged ``python`` is run with this Python. Blocks run in document order, README.md
  first, then docs/*.md by name, then experiments/README.md, all in ONE scratch directory holding a copy of the files git
  tracks (a fresh clone, without .git), so a later block may use what an earlier one wrote
  (``results/``, ``report.html``, ...). Untagged, ``toml``, ``text`` ... blocks are not run.
- ``<!-- doc-test: skip REASON -->`` on the line right before a fence skips that block; the
  reason is required (e.g. "takes minutes on 2 cores", "needs a dask cluster", "installs
  packages"). Keep slow commands in their own marked block, fast ones in an unmarked one.
- ``<!-- doc-test: file NAME -->`` right before a fence writes the block's text to NAME in the
  scratch directory instead of running it (a config file the following commands use).
- A block fails the test when it exits non-zero; the failure names the file and line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(skip|file)\s+(.+?)\s*-->\s*$")
RUNNABLE = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}
BLOCK_TIMEOUT = 600


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    text: str
    marker: tuple[str, str] | None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Fenced blocks of a Markdown file with the marker (if any) on the line before each."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start = index
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        marker = MARKER.match(lines[start - 1]) if start > 0 else None
        found.append(Block(str(path.relative_to(ROOT)), start + 1, match.group(1).lower(),
                           "\n".join(lines[start + 1 : end]) + "\n", marker.groups() if marker else None))
        index = end + 1
    return found


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "experiments" / "README.md"]


def fresh_copy(target: Path) -> None:
    """The files git tracks (what a clone holds), without .git."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def test_every_marker_is_well_formed_and_every_block_is_classified() -> None:
    """A typo in a marker must not silently run or skip a block."""
    for doc in documents():
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if "doc-test" in line:
                assert MARKER.match(line), f"{doc.name}:{number}: malformed marker {line!r}"
    assert any(b.lang in RUNNABLE and not b.marker for doc in documents() for b in blocks(doc))


@pytest.mark.slow
def test_documented_commands_run_as_written(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to know which files a clone holds")
    scratch = tmp_path / "clone"
    scratch.mkdir()
    fresh_copy(scratch)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "NO_COLOR": "1", "COLUMNS": "120"}
    ran = []
    for doc in documents():
        for block in blocks(doc):
            if block.marker and block.marker[0] == "skip":
                continue
            if block.marker and block.marker[0] == "file":
                (scratch / block.marker[1]).write_text(block.text)
                continue
            if block.lang not in RUNNABLE:
                continue
            command = ["bash", "-eo", "pipefail", "-c", block.text] if RUNNABLE[block.lang] == "bash" \
                else [sys.executable, "-c", block.text]
            result = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True,
                                    timeout=BLOCK_TIMEOUT)
            assert result.returncode == 0, (
                f"{block.where} exited {result.returncode}:\n{block.text}\nstdout:\n{result.stdout[-3000:]}"
                f"\nstderr:\n{result.stderr[-3000:]}")
            ran.append(block.where)
    assert ran, "no documented command ran"
