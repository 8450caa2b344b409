"""The docs and help say what a user needs and nothing that is not theirs: no issue or
acceptance numbers, no path of one machine, one wording of each install hint, the forms of
--dataset and --partition in --help; `ist report --quiet` prints nothing on stderr."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ist_cli.errors import install_hint
from tests.helpers import ist

ROOT = Path(__file__).resolve().parents[1]


def user_docs() -> list[Path]:
    return [ROOT / "README.md", ROOT / "experiments" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_doc_cites_an_issue_an_acceptance_item_or_a_path_of_one_machine() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout")
    found = subprocess.run(["git", "grep", "-nE", r"issue [0-9]|acceptance [0-9]", "--", "docs", "README.md",
                            "experiments"], cwd=ROOT, capture_output=True, text=True)
    assert found.stdout == "", found.stdout
    machine = re.compile(r"(?<![\w.])/(work|home|Users|tmp/pytest)/\w")
    hits = [f"{doc.name}:{n}: {line}" for doc in user_docs() for n, line in enumerate(doc.read_text().splitlines(), 1)
            if machine.search(line)]
    assert hits == []


def test_the_mpi_install_hint_is_worded_as_the_docs_word_it() -> None:
    hint = install_hint("mpi")
    assert hint.startswith("pip install -e '.[mpi]'")
    for doc in (ROOT / "README.md", ROOT / "docs" / "cluster.md"):
        text = doc.read_text()
        assert "pip install -e '.[mpi]'" in text and "ist-cli[mpi]" not in text, doc.name


def test_run_help_lists_the_forms_of_dataset_and_partition() -> None:
    text = " ".join(ist("run", "--help", check=True).stdout.split())
    for form in ("digits", "synthetic", "npz:PATH", "mnist:DIR", "libsvm:PATH", "mnist1d[:N]"):
        assert form in text.split("--dataset SPEC", 1)[1].split("--", 1)[0], form
    for form in ("iid", "dirichlet:ALPHA", "shards:K"):
        assert form in text.split("--partition SPEC", 1)[1].split("--", 1)[0], form


@pytest.mark.slow  # one small run
def test_report_quiet_prints_nothing_on_stderr(tmp_path: Path) -> None:
    ist("run", "--model", "quadratic", "--workers", "2", "--dim", "4", "--rounds", "2", "--out", str(tmp_path),
        "--quiet", check=True)
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    figures = tmp_path / "figs"
    loud = ist("report", str(tmp_path), "--figures", str(figures), check=True)
    assert "skipped" in loud.stderr and "wrote" in loud.stderr
    quiet = ist("report", str(tmp_path), "--figures", str(figures), "--quiet", check=True)
    assert quiet.stderr == "" and quiet.stdout == loud.stdout
    assert any(figures.iterdir())
