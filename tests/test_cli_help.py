"""What a user sees before running anything: `ist` alone, --help, shell completion."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ist


def complete(words: str) -> list[str]:
    """Ask the real CLI for bash completions of ``words`` (the word being typed is the last)."""
    parts = words.split(" ")
    env = {**os.environ, "_IST_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1)}
    result = subprocess.run([sys.executable, "-c", "from ist_cli.cli import main; main()"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line.startswith("plain,")]


@pytest.mark.parametrize("words,expected", [
    ("ist run --model ", ["quadratic", "mlp", "cnn"]),
    ("ist run --arch ", ["simple-cnn", "resnet8", "preact-resnet"]),
    ("ist run --sketch ", ["perm", "perm-precond", "rand", "identity"]),
    ("ist run --transport ", ["shm", "mpi"]),
    ("ist run --prune ", ["snip", "random", "magnitude"]),
    ("ist run --algorithm l", ["local-sgd"]),
    ("ist report x --ci ", ["t", "bootstrap", "bca"]),
    ("ist ", ["calibrate", "ls", "report", "run", "study", "sweep", "theory"]),
])
def test_bash_completion_offers_the_allowed_values(words: str, expected: list[str]) -> None:
    assert complete(words) == expected


def test_ist_alone_prints_its_help_readably() -> None:
    result = ist()
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Usage: ist") and "error" not in result.stdout
    assert {"run", "sweep", "report"} <= {line.split()[0] for line in lines if line.startswith("  ") and line.split()}


def test_run_help_shows_types_allowed_values_and_sections() -> None:
    text = ist("run", "--help").stdout
    sections = [line for line in text.splitlines() if line.endswith("options:")]
    assert sections == ["Common options:", "Quadratic options:", "MLP options:", "Convnet options:",
                        "MLP optimizer, sparsity and goal options:", "Network model options:",
                        "Input and output options:"]
    assert "--model [quadratic|mlp|cnn]" in text and "--workers INTEGER RANGE" in text and "[x>=1]" in text
    assert "--lr FLOAT RANGE" in text and "[x>0.0]" in text
    assert " VALUE " not in text  # no untyped option left
    # quadratic options sit in their section, MLP ones in theirs
    assert text.index("--dim") > text.index("Quadratic options:") > text.index("--workers")
    assert text.index("--hidden") > text.index("MLP options:") > text.index("--dim")
    # the option table's own section, typed like every other option; --transport with the common ones
    assert text.index("--sparsity") > text.index("MLP optimizer, sparsity and goal options:") > text.index("--hidden")
    assert "[0.0<=x<1.0]" in text and "--prune [snip|random|magnitude]" in text
    assert "--transport [shm|mpi]" in text and text.index("--transport") < text.index("Quadratic options:")
    assert "--server-update [average|delta]" in text and "perm-precond" in text


def test_typed_options_still_report_bad_values_in_one_line() -> None:
    result = ist("run", "--model", "quadratic", "--workers", "0", "--quiet")
    assert result.returncode == 2 and result.stderr.strip().startswith("ist: error: --workers: '0'")
    result = ist("run", "--model", "rnn")
    assert result.returncode == 2 and "'rnn'" in result.stderr and "quadratic" in result.stderr
