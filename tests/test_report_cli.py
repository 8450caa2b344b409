"""``ist report`` as a user runs it: a subprocess, reading what it printed and wrote."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from ist_cli.models.theory import ist_bias_sq
from tests.test_report_support import h5_final, reference_bootstrap, small_sweep, write_run


def ist(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ist_cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return small_sweep(tmp_path_factory.mktemp("results"))


def files_of(paths: list[Path], algorithm: str) -> list[Path]:
    return sorted((p for p in paths if p.name.startswith(algorithm + "-")), key=str)


def test_csv_numbers_equal_the_hdf5_files(sweep: list[Path]) -> None:
    result = ist("report", str(sweep[0].parent), "--format", "csv", "--metric", "loss", "--metric", "bytes",
                 "--ci", "bootstrap")
    assert result.returncode == 0, result.stderr
    rows = {row["algorithm"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert set(rows) == {"ist", "gd"}
    for algorithm, row in rows.items():
        files = files_of(sweep, algorithm)
        mean, low, high = reference_bootstrap([h5_final(p, "loss") for p in files])
        assert float(row["loss_mean"]) == pytest.approx(mean, rel=1e-12)
        assert float(row["loss_ci_low"]) == pytest.approx(low, rel=1e-12)
        assert float(row["loss_ci_high"]) == pytest.approx(high, rel=1e-12)
        assert float(row["loss_ci_low"]) <= float(row["loss_mean"]) <= float(row["loss_ci_high"])
        assert float(row["bytes_mean"]) == h5_final(files[0], "bytes")
        assert row["runs"] == "4" and row["seeds"] == "0 1 2 3" and row["loss_n"] == "4"


def test_json_carries_values_groups_and_method(sweep: list[Path]) -> None:
    result = ist("report", str(sweep[0].parent), "--format", "json", "--where", "algorithm=ist", "--best",
                 "--ci", "bootstrap")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["which"] == "best" and doc["ci"]["resamples"] == 10_000 and doc["skipped"] == []
    (group,) = doc["groups"]  # --where keeps ist only; nothing else varies but the seed
    files = files_of(sweep, "ist")
    assert group["files"] == [str(p) for p in files]
    for metric in ("loss", "dist_to_opt_sq", "f_gap"):
        best = []
        for p in files:
            with h5py.File(p, "r") as handle:
                best.append(float(np.min(handle[f"metrics/{metric}"][()])))
        stats = group["metrics"][metric]
        assert stats["values"] == best
        assert (stats["mean"], stats["ci_low"], stats["ci_high"]) == pytest.approx(reference_bootstrap(best), rel=1e-12)


def test_terminal_table_shows_only_varying_keys(sweep: list[Path]) -> None:
    result = ist("report", str(sweep[0].parent), "--metric", "loss")
    assert result.returncode == 0, result.stderr
    assert "algorithm" in result.stdout and "runs" in result.stdout
    for constant in ("workers", "dim", "sketch", "lr"):
        assert not re.search(rf"\b{constant}\b", result.stdout)
    md = ist("report", str(sweep[0].parent), "--metric", "loss", "--format", "md")
    assert md.stdout.splitlines()[2] == "| algorithm | runs | loss |"


def test_broken_files_are_named_and_the_rest_reported(tmp_path: Path) -> None:
    good = [write_run(tmp_path, seed=s) for s in (0, 1)]
    (tmp_path / "half.h5.tmp").write_bytes(b"\x89HDF\r\n\x1a\n partly written")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "corrupt.h5").write_bytes(b"this is not an HDF5 file at all")
    future = write_run(tmp_path / "sub", seed=7)
    with h5py.File(future, "r+") as handle:
        handle.attrs["schema"] = 99
    failed = write_run(tmp_path, seed=8, status="failed")
    result = ist("report", str(tmp_path), "--format", "json", "--metric", "loss")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    (group,) = doc["groups"]
    assert group["files"] == [str(p) for p in sorted(good, key=str)]
    reasons = {Path(s["path"]).name: s["reason"] for s in doc["skipped"]}
    assert set(reasons) == {"half.h5.tmp", "corrupt.h5", future.name, failed.name}
    assert "in progress" in reasons["half.h5.tmp"]
    assert "not a readable HDF5" in reasons["corrupt.h5"]
    assert "unknown schema version 99" in reasons[future.name]
    assert "failed" in reasons[failed.name]
    for name in reasons:
        assert re.search(rf"^ist: skipped .*{re.escape(name)}: ", result.stderr, re.M)


@pytest.mark.parametrize("make", ["empty", "missing", "only_other_files", "all_corrupt"])
def test_nothing_to_report_is_one_line_and_exit_2(tmp_path: Path, make: str) -> None:
    target = tmp_path / "results"
    if make != "missing":
        target.mkdir()
    if make == "only_other_files":
        (target / "notes.txt").write_text("hello")
    if make == "all_corrupt":
        (target / "bad.h5").write_bytes(b"garbage")
    result = ist("report", str(target))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ist: error: ") and str(target) in lines[-1]
    assert len(lines) == (2 if make == "all_corrupt" else 1)  # the skipped file, then the error
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["--where", "colour=red"], "unknown key 'colour'"),
    (["--where", "algorithm=adam"], "no run matches"),
    (["--metric", "accuracy"], "unknown metric 'accuracy'"),
    (["--group-by", "nope"], "unknown key 'nope'"),
    (["--x", "epochs"], "epochs"),
])
def test_bad_options_are_one_line_user_errors(sweep: list[Path], args: list[str], expected: str) -> None:
    result = ist("report", str(sweep[0].parent), *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr


def test_figures_and_self_contained_html(sweep: list[Path], tmp_path: Path) -> None:
    figures, page = tmp_path / "figs", tmp_path / "out" / "report.html"
    result = ist("report", str(sweep[0].parent), "--figures", str(figures), "--html", str(page),
                 "--x", "bytes", "--format", "csv")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in figures.iterdir())
    for stem in ("loss_vs_bytes", "dist_to_opt_sq_vs_bytes", "comm_vs_f_gap"):
        assert f"{stem}.png" in names and f"{stem}.svg" in names
        pixels = np.asarray(Image.open(figures / f"{stem}.png").convert("L"), dtype=np.float64)
        assert pixels.std() > 10.0
        assert (figures / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    text = page.read_text()
    assert [p.name for p in page.parent.iterdir() if p.name.endswith(".tmp")] == []  # no temporary left
    assert "<script" not in text and not re.search(r"(src|href)=\"(https?:)?//", text)
    # the page shows the grid of every metric (one legend) and the communication figure
    assert text.count("data:image/png;base64,") == len([n for n in names if n.endswith(".png")
                                                        and n.startswith(("curves_vs_", "comm_vs_"))]) == 2
    for needle in ("deadbeef", "0.1.0", "packages.numpy", "9.9.9", "algorithm=ist", "Provenance"):
        assert needle in text
    # the theory line's value is checked in test_report.py; here: it is drawn in the written figure
    assert "theory" in (figures / "dist_to_opt_sq_vs_bytes.svg").read_text()


def test_end_to_end_with_ist_run(tmp_path: Path) -> None:
    """Real runs of the engine: report numbers equal the files, theory line where docs/algorithms.md puts it."""
    if shutil.which("ist") is None and ist("run", "--help").returncode != 0:
        pytest.skip("ist run is not available")
    results = tmp_path / "results"
    for seed in (0, 1):
        run = ist("run", "--model", "quadratic", "--workers", "2", "--dim", "8", "--rounds", "150",
                  "--seed", str(seed), "--out", str(results), "--quiet")
        if run.returncode != 0 and "not available" in run.stderr:
            pytest.skip("ist run is not available")
        assert run.returncode == 0, run.stderr
    files = sorted(results.glob("*.h5"), key=str)
    assert len(files) == 2
    result = ist("report", str(results), "--format", "json", "--metric", "dist_to_opt_sq")
    assert result.returncode == 0, result.stderr
    (group,) = json.loads(result.stdout)["groups"]
    finals = [h5_final(p, "dist_to_opt_sq") for p in files]
    assert group["metrics"]["dist_to_opt_sq"]["values"] == finals
    assert group["metrics"]["dist_to_opt_sq"]["mean"] == pytest.approx(np.mean(finals), rel=1e-12)
    # after 150 rounds IST sits near its predicted limit, not at x*: E‖x−x*‖² ≥ ‖x^∞−x*‖² up to noise
    biases = []
    for p in files:
        with h5py.File(p, "r") as handle:
            L, b, x_star = handle["problem/L"][()], handle["problem/b"][()], handle["problem/x_star"][()]
            tail = handle["metrics/dist_to_opt_sq"][-50:]
        biases.append(ist_bias_sq(L, b, 2, "perm", None, x_star))
        assert biases[-1] > 0
        assert 0.5 * biases[-1] < float(np.mean(tail)) < 3.0 * biases[-1]


@pytest.mark.slow
def test_two_models_and_a_duplicate_give_two_sections_whole_numbers_no_warning(tmp_path: Path) -> None:
    """Acceptance: runs of both models and one run copied to a second directory."""
    results = tmp_path / "results"
    for sub in ("q", "m", "copy"):
        (results / sub).mkdir(parents=True)
    quad = [write_run(results / "q", algorithm=a, seed=s) for a in ("ist", "gd") for s in (0, 1)]
    mlp_metrics = {"round": np.arange(5.0), "loss": np.linspace(2.3, 0.123456789, 5),
                   "test_accuracy": np.linspace(0.1, 0.987654321, 5), "bytes_up": np.arange(5.0) * 1e6,
                   "bytes_down": np.arange(5.0) * 1e6, "wall_time": np.arange(5.0)}
    for seed in (2, 10):  # seed 10 sorts after 2 (numbers, not strings)
        write_run(results / "m", model="mlp", seed=seed, metrics=mlp_metrics)
    shutil.copy(quad[0], results / "copy" / quad[0].name)
    result = ist("report", str(results), "--html", str(tmp_path / "r.html"), "--figures", str(tmp_path / "f"))
    assert result.returncode == 0, result.stderr
    out, err = result.stdout, result.stderr
    assert "model mlp" in out and "model quadratic" in out
    assert out.index("model mlp") < out.index("model quadratic")
    assert "…" not in out and "..." not in out
    assert "6 runs" in out  # 4 quadratic + 2 MLP, the copy counted once
    assert "duplicate of" in err and str(results / "copy") in err
    assert "arning" not in err and "Traceback" not in err
    assert "0.9877" in out  # the MLP accuracy, whole (4 significant digits)
    html = (tmp_path / "r.html").read_text()
    assert html.count("<h2>Model: ") == 2
    figures = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert "mlp_comm_vs_test_accuracy.pdf" in figures and "quadratic_comm_vs_f_gap.svg" in figures
    md = ist("report", str(results), "--format", "md").stdout
    assert md.count("## ") == 2
    csv_rows = list(csv.DictReader(io.StringIO(ist("report", str(results), "--format", "csv").stdout)))
    assert sorted(row["model"] for row in csv_rows) == ["mlp", "quadratic", "quadratic"]
    (mlp_row,) = [row for row in csv_rows if row["model"] == "mlp"]
    assert mlp_row["seeds"] == "2 10"


@pytest.mark.slow
def test_svg_text_stays_text_and_pdf_is_written(sweep: list[Path], tmp_path: Path) -> None:
    result = ist("report", str(sweep[0].parent), "--figures", str(tmp_path), "--format", "csv", "--x", "bytes",
                 "--logx")
    assert result.returncode == 0, result.stderr
    svg = (tmp_path / "loss_vs_bytes.svg").read_text()
    assert "<text" in svg and "Student-t" not in svg
    assert (tmp_path / "loss_vs_bytes.pdf").read_bytes().startswith(b"%PDF")
    width, _ = Image.open(tmp_path / "loss_vs_bytes.png").size
    assert width == round(3.4 * 300)  # one paper column at 300 dpi
